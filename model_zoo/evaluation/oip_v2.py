"""The Open Inference Protocol (KServe v2) REST transport of ``attnzoo eval --endpoint``.

One request per image: input ``IMAGE`` (``BYTES``, shape ``[1]``) sent with the binary tensor
data extension, outputs requested as binary: ``num_detections`` INT32 ``[1]``,
``detection_boxes`` FP32 ``[1, K, 4]`` (x1, y1, x2, y2 in original-image pixels),
``detection_scores`` FP32 ``[1, K]`` and ``detection_classes`` INT32 ``[1, K]`` (labels 0..79),
as attnzoo's own v2 front door and TensorRT's EfficientNMS name them. A server that answers in the
JSON tensor form instead is read too. The protocol reports neither the model time nor the weights'
sha256, unless the model metadata's ``parameters`` carry ``sha256``/``device``/``weights_source``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import numpy as np

from model_zoo.categories import COCO_CATEGORY_IDS

from .transport import EndpointError, EndpointModel, ServedDetection, ServedResult, Transport, json_object, optional_str

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
_DTYPES = {"INT32": "<i4", "FP32": "<f4", "INT64": "<i8", "FP64": "<f8"}


class OipV2Transport(Transport):
    def describe(self, variant: str) -> EndpointModel:
        self.send("GET", f"/v2/models/{variant}/ready")
        parameters = json_object(self.send("GET", f"/v2/models/{variant}")).get("parameters")
        if not isinstance(parameters, dict):
            parameters = {}
        return EndpointModel(
            variant=variant,
            sha256=optional_str(parameters.get("sha256")),
            device=optional_str(parameters.get("device")),
            weights_source=optional_str(parameters.get("weights_source")),
        )

    def detect(self, image: bytes, variant: str) -> ServedResult:
        element = struct.pack("<I", len(image)) + image  # a BYTES element: 4-byte length, then the bytes
        header = {
            "inputs": [
                {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(element)}}
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
            "parameters": {"score_thr": self.score_thr(variant)},
        }
        encoded = json.dumps(header).encode("utf-8")
        response = self.send(
            "POST",
            f"/v2/models/{variant}/infer",
            content=encoded + element,
            headers={HEADER_LENGTH: str(len(encoded)), "Content-Type": "application/octet-stream"},
        )
        try:
            outputs = _read_outputs(response)
            count = int(outputs["num_detections"].reshape(-1)[0])
            boxes = outputs["detection_boxes"].reshape(-1, 4)[:count]
            scores = outputs["detection_scores"].reshape(-1)[:count]
            labels = outputs["detection_classes"].reshape(-1)[:count]
            detections = [
                ServedDetection((float(x1), float(y1), float(x2), float(y2)), float(score), COCO_CATEGORY_IDS[int(label)])
                for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels)
            ]
        except (KeyError, IndexError, TypeError, ValueError):
            raise EndpointError(f"{self.url}/v2/models/{variant}/infer: an answer without the four detection outputs") from None
        return ServedResult(detections, model_s=None)


def _read_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    """Output name → array, from the binary extension's layout or the JSON tensor form."""
    body = response.content
    length = int(response.headers.get(HEADER_LENGTH, len(body)))
    header: dict[str, Any] = json.loads(body[:length])
    offset, arrays = length, {}
    for output in header["outputs"]:
        dtype = np.dtype(_DTYPES[output["datatype"]])
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.asarray(output["data"], dtype=dtype)
        else:
            values = np.frombuffer(body[offset : offset + size], dtype=dtype)
            offset += size
        arrays[output["name"]] = values.reshape(output["shape"])
    return arrays
