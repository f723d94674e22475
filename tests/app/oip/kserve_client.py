"""KServe's Python SDK (``kserve``) as a KServe user runs it against a v2 server, in a process of
its own: KServe's generated gRPC module registers the ``inference.*`` messages in protobuf's default
pool, where tritonclient's (the other tests' client) already are, and the two cannot share it.

Usage: python kserve_client.py HTTP_URL GRPC_ADDRESS MODEL IMAGE_PATH SCORE_THR
Prints, as JSON, each client's detections of the image (``grpc``, ``rest``): boxes, scores, classes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

TIMEOUT_S = 300.0


def request(model: str, image: bytes, score_thr: float | str) -> InferRequest:
    tensor = InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=np.object_), binary_data=True)
    return InferRequest(model_name=model, infer_inputs=[tensor], parameters={"score_thr": score_thr}, request_id="kserve-1")


def detections(response) -> dict[str, list]:
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    count = int(outputs["num_detections"].reshape(-1)[0])
    return {
        "boxes": outputs["detection_boxes"][0, :count].tolist(),
        "scores": outputs["detection_scores"][0, :count].tolist(),
        "classes": outputs["detection_classes"][0, :count].tolist(),
        "num_detections_shape": list(outputs["num_detections"].shape),
    }


async def main(http_url: str, grpc_address: str, model: str, image: bytes, score_thr: float) -> dict[str, dict[str, list]]:
    grpc_client = InferenceGRPCClient(grpc_address, timeout=TIMEOUT_S)
    rest_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=TIMEOUT_S))
    try:
        # KServe's gRPC client sends no float parameter (its protocol has no double): the number as a string.
        over_grpc = await grpc_client.infer(request(model, image, str(score_thr)))
        over_rest = await rest_client.infer(http_url, request(model, image, score_thr), model_name=model)
    finally:
        await grpc_client.close()
        await rest_client.close()
    return {"grpc": detections(over_grpc), "rest": detections(over_rest)}


if __name__ == "__main__":
    http_url, grpc_address, model, image_path, score_thr = sys.argv[1:]
    print(json.dumps(asyncio.run(main(http_url, grpc_address, model, Path(image_path).read_bytes(), float(score_thr)))))
