"""Triton's perf_analyzer (the tritonclient 2.48.0 wheel's binary), unchanged, measures the variant
as ``attnzoo serve`` serves it and as Triton hosts it, over HTTP and gRPC at concurrency 1 and 2,
sending real photos as ``--input-data``: it reads each server's model metadata, configuration and
statistics, and every request it sends is answered (its server-side figures are the statistics)."""

from __future__ import annotations

import pytest

from tests.triton.client_script import http_client
from tests.triton.conftest import PLAIN_VARIANT
from tests.triton_tools import run_perf_analyzer, write_image_input_data

SERVERS = {"attnzoo serve": "attnzoo_serve", "triton": "triton"}  # → the fixture serving it


def _inference_count(server) -> int:
    with http_client(server.http_url) as client:
        (stats,) = client.get_inference_statistics(PLAIN_VARIANT)["model_stats"]
    return int(stats["inference_count"])


def _measure(server, perf_analyzer_install, images, tmp_path, protocol: str, concurrency: int, *extra_args: str) -> None:
    input_data = write_image_input_data(tmp_path / "input.json", [images["coffee_landscape.png"], images["astronaut_portrait.jpg"]])
    request_count = 2 * concurrency
    before = _inference_count(server)
    run = run_perf_analyzer(
        perf_analyzer_install, url=server.http_url if protocol == "http" else server.grpc_url, protocol=protocol, model=PLAIN_VARIANT,
        input_data=input_data, concurrency=concurrency, request_count=request_count, report=tmp_path / "report.csv", extra_args=extra_args,
    )  # fmt: skip
    assert run.returncode == 0, run.output
    (row,) = run.rows
    assert int(row["Concurrency"]) == concurrency and float(row["Inferences/Second"]) > 0, run.output
    assert "Server:" in run.output and "Inference count" in run.output, run.output  # the server's statistics, read
    assert _inference_count(server) - before == request_count


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("server", list(SERVERS))
def test_perf_analyzer_measures_the_variant(request, perf_analyzer_install, images, tmp_path, server, protocol, concurrency):
    _measure(request.getfixturevalue(SERVERS[server]), perf_analyzer_install, images, tmp_path, protocol, concurrency)


def test_perf_analyzer_streams_to_attnzoo_serve(attnzoo_serve, perf_analyzer_install, images, tmp_path):
    """``--streaming``: ModelStreamInfer, whose answers must carry the requests' ids (perf_analyzer waits for them)."""
    _measure(attnzoo_serve, perf_analyzer_install, images, tmp_path, "grpc", 2, "--streaming")
