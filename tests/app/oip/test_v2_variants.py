"""Every registry variant over both transports of the Open Inference Protocol, detections
exactly ``/detect``'s (a server where all four load: ``four_variant_server``)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from oip_support import detect_arrays, detections_of, grpcclient, http_client, httpclient, image_input

from model_zoo import load_registry

VARIANTS = [(entry.alias, entry.name) for entry in load_registry()]


@pytest.mark.parametrize(("alias", "full_name"), VARIANTS, ids=[alias for alias, _ in VARIANTS])
def test_each_variant_answers_as_detect_over_http_and_grpc(four_variant_server, jpeg, alias, full_name):
    server = four_variant_server
    response = httpx.post(f"{server.base_url}/detect", params={"variant": alias, "score_thr": 0.05}, content=jpeg, timeout=300)
    assert response.status_code == 200, response.text
    expected = detect_arrays(response.json()["detections"])
    assert len(expected["scores"]) > 0
    triton_http, triton_grpc = http_client(server.base_url), grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for name in (alias, full_name):
            assert triton_http.is_model_ready(name) and triton_grpc.is_model_ready(name)
            assert triton_http.get_model_metadata(name)["name"] == alias
            for client, module in ((triton_http, httpclient), (triton_grpc, grpcclient)):
                result = client.infer(name, [image_input(module, [jpeg])], parameters={"score_thr": 0.05})
                ours = detections_of(result)
                for key in ("boxes", "scores", "classes"):
                    assert np.array_equal(ours[key], expected[key]), (alias, name, key)
    finally:
        triton_http.close()
        triton_grpc.close()
