"""Fixtures of the Open Inference Protocol tests: tritonclient (HTTP, gRPC) on the shared server."""

from __future__ import annotations

from typing import Iterator

import pytest
from oip_support import grpcclient, http_client, httpclient


@pytest.fixture()
def triton_http(live_server) -> Iterator[httpclient.InferenceServerClient]:
    client = http_client(live_server.base_url)
    yield client
    client.close()


@pytest.fixture()
def triton_grpc(live_server) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    yield client
    client.close()
