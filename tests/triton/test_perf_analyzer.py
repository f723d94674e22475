"""Triton's perf_analyzer (the tritonclient 2.48.0 wheel's binary) measures the Triton-hosted
variant over HTTP and gRPC at concurrency 1 and 2, sending real photos as ``--input-data``."""

from __future__ import annotations

import pytest

from tests.triton.client_script import http_client
from tests.triton.conftest import PLAIN_VARIANT
from tests.triton_tools import run_perf_analyzer, write_image_input_data


def _inference_count(triton) -> int:
    with http_client(triton.http_url) as client:
        (stats,) = client.get_inference_statistics(PLAIN_VARIANT)["model_stats"]
    return int(stats["inference_count"])


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_the_triton_hosted_variant(triton, perf_analyzer_install, images, tmp_path, protocol, concurrency):
    input_data = write_image_input_data(tmp_path / "input.json", [images["coffee_landscape.png"], images["astronaut_portrait.jpg"]])
    url = triton.http_url if protocol == "http" else triton.grpc_url
    request_count = 2 * concurrency
    before = _inference_count(triton)
    run = run_perf_analyzer(
        perf_analyzer_install, url=url, protocol=protocol, model=PLAIN_VARIANT, input_data=input_data,
        concurrency=concurrency, request_count=request_count, report=tmp_path / "report.csv",
    )  # fmt: skip
    assert run.returncode == 0, run.output
    (row,) = run.rows
    assert int(row["Concurrency"]) == concurrency and float(row["Inferences/Second"]) > 0, run.output
    assert _inference_count(triton) - before == request_count
