"""Helpers of the Open Inference Protocol tests: Triton's own clients and their inputs.

tritonclient.grpc registers Triton's ``inference.*`` messages in protobuf's default pool; the
service's generated code keeps a pool of its own (scripts/generate-grpc), so both live in the
test process beside the in-process server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

CLIENT_TIMEOUT_S = 300.0  # CPU forwards on a loaded machine
OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
ATTNZOO = [sys.executable, "-m", "model_zoo"]


def serve(zoo, tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``attnzoo serve`` asked for a variant with no weights: it starts at once and loads nothing."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ATTNZOO_")}
    return subprocess.Popen(
        [*ATTNZOO, "serve", *args, "--variants", "attn0010-dcn", "--device", "cpu", "--metafile", str(zoo.metafile),
         "--weights-dir", str(zoo.weights_dir), "--log-level", "warning"],
        env={**clean, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip


def wait_http(process: subprocess.Popen, base_url: str) -> None:
    deadline = time.monotonic() + 240
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if httpx.get(f"{base_url}/v2/health/live", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.25)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


def http_client(base_url: str) -> httpclient.InferenceServerClient:
    """tritonclient.http for a server at ``http://host:port``."""
    return httpclient.InferenceServerClient(
        base_url.removeprefix("http://"), connection_timeout=CLIENT_TIMEOUT_S, network_timeout=CLIENT_TIMEOUT_S
    )


def image_input(client_module, images: list[bytes], *, binary: bool = True):
    """The IMAGE input (BYTES, shape [B]) of encoded ``images`` for tritonclient.http or .grpc."""
    tensor = client_module.InferInput("IMAGE", [len(images)], "BYTES")
    array = np.array(images, dtype=np.object_)
    if client_module is httpclient:
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return tensor


def detections_of(result, row: int = 0) -> dict[str, np.ndarray]:
    """Image ``row``'s detections in an infer result: boxes (N, 4), scores (N,), classes (N,)."""
    count = int(result.as_numpy("num_detections")[row])
    return {
        "boxes": result.as_numpy("detection_boxes")[row, :count],
        "scores": result.as_numpy("detection_scores")[row, :count],
        "classes": result.as_numpy("detection_classes")[row, :count],
    }


def detect_arrays(detections: list[dict]) -> dict[str, np.ndarray]:
    """/detect's detections as the same arrays (float32: the model's own precision)."""
    return {
        "boxes": np.array([d["bbox"] for d in detections], dtype=np.float32).reshape(-1, 4),
        "scores": np.array([d["score"] for d in detections], dtype=np.float32),
        "classes": np.array([d["label"] for d in detections], dtype=np.int32),
    }


__all__ = [
    "CLIENT_TIMEOUT_S", "OUTPUTS", "detect_arrays", "detections_of", "grpcclient", "http_client", "httpclient", "image_input", "serve", "stop",
    "wait_http",
]  # fmt: skip
