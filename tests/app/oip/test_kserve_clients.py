"""KServe's Python SDK, unchanged: ``InferenceGRPCClient`` (``score_thr`` as the string "0.5", all it
can send for a float) and ``InferenceRESTClient`` (0.5) get ``/detect``'s detections of the same
image at the same threshold. The clients run in a process of their own (``kserve_client.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

SCRIPT = Path(__file__).with_name("kserve_client.py")
VARIANT = "attn0010"
SCORE_THR = 0.5


def test_kserve_clients_get_the_detections_of_detect(live_server, jpeg, tmp_path):
    image = tmp_path / "scene.jpg"
    image.write_bytes(jpeg)
    response = httpx.post(f"{live_server.base_url}/detect", params={"variant": VARIANT, "score_thr": SCORE_THR}, content=jpeg, timeout=300)
    assert response.status_code == 200, response.text
    expected = response.json()["detections"]
    assert expected, "the synthetic weights detect something above the threshold"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), live_server.base_url, live_server.grpc_url, VARIANT, str(image), str(SCORE_THR)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    answers = json.loads(run.stdout)
    for client in ("grpc", "rest"):
        found = answers[client]
        assert found["num_detections_shape"] == [1, 1], client  # IMAGE was sent as [1, 1]
        assert np.array_equal(np.array(found["scores"], dtype=np.float32), np.array([d["score"] for d in expected], dtype=np.float32)), client
        assert np.array_equal(np.array(found["boxes"], dtype=np.float32), np.array([d["bbox"] for d in expected], dtype=np.float32)), client
        assert found["classes"] == [d["label"] for d in expected], client
