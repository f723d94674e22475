"""``attnzoo serve --grpc-port`` / ``ATTNZOO_GRPC_PORT``: the real console script serving gRPC
beside HTTP, turning it off with 0, and refusing a port it cannot use in one line."""

from __future__ import annotations

import re
import socket

import pytest
from oip_support import grpcclient, serve, stop, wait_http
from tritonclient.utils import InferenceServerException

from app.settings import Settings


def test_serve_answers_grpc_on_the_port_given(zoo, tmp_path, unused_port):
    http_port, grpc_port = unused_port(), unused_port()
    process = serve(zoo, tmp_path, "--port", str(http_port), "--grpc-port", str(grpc_port))
    try:
        wait_http(process, f"http://127.0.0.1:{http_port}")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert client.is_server_live() is True
        assert client.is_server_ready() is False  # attn0010-dcn has no weights
        assert client.get_server_metadata(as_json=True)["name"] == "attnzoo"
        client.close()
    finally:
        stop(process)


def test_grpc_port_0_turns_grpc_off_and_the_option_wins_over_the_environment(zoo, tmp_path, unused_port):
    http_port, grpc_port = unused_port(), unused_port()
    process = serve(zoo, tmp_path, "--port", str(http_port), "--grpc-port", "0", env={"ATTNZOO_GRPC_PORT": str(grpc_port)})
    try:
        wait_http(process, f"http://127.0.0.1:{http_port}")
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        with pytest.raises(InferenceServerException) as error:
            client.is_server_live(client_timeout=10)
        assert error.value.status() == "StatusCode.UNAVAILABLE"  # nothing listens there
        client.close()
    finally:
        stop(process)


def test_a_grpc_port_in_use_is_refused_in_one_line(zoo, tmp_path, unused_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(zoo, tmp_path, "--port", str(unused_port()), env={"ATTNZOO_GRPC_PORT": str(port)})
        _, stderr = process.communicate(timeout=240)
    assert process.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert lines == [f"attnzoo serve: error: gRPC port (ATTNZOO_GRPC_PORT, --grpc-port) {port} on 127.0.0.1 cannot be used: Address already in use"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"grpc_port": 70000}, "invalid gRPC port 70000: expected 1..65535, or 0 for no gRPC"),
        ({"grpc_port": -1}, "invalid gRPC port -1"),
        ({"port": 9000, "grpc_port": 9000}, "gRPC port 9000 is the HTTP port too"),
    ],
)
def test_bad_grpc_ports_are_refused_by_the_settings(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**values)
    assert Settings(grpc_port=0).grpc_port == 0
    assert Settings.model_fields["grpc_port"].default == 8001  # Triton's
