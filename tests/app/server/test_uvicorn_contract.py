"""The parts of uvicorn's httptools protocol that ``app/server/http_protocol.py`` builds on.

``LimitedHTTPProtocol`` subclasses uvicorn's ``HttpToolsProtocol`` and uses attributes and methods
that are not uvicorn's public API. pyproject.toml allows only the uvicorn minor release tested
here; this test fails loudly, naming what is missing, when an installed uvicorn lacks one of them
(before the server fails at import or, worse, silently).
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version
from pathlib import Path

import tomllib
import uvicorn
from packaging.requirements import Requirement
from uvicorn.protocols.http import httptools_impl

from app.server.http_protocol import HTTPLimits, LimitedHTTPProtocol

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
# what LimitedHTTPProtocol overrides or calls on the base class
BASE_METHODS = (
    "connection_made", "connection_lost", "data_received", "on_message_begin", "on_headers_complete", "on_message_complete",
    "timeout_keep_alive_handler", "_unset_keepalive_if_required",
)  # fmt: skip
# instance attributes it reads, once a connection is made and a request's head is parsed
INSTANCE_ATTRIBUTES = (
    "transport", "loop", "parser", "cycle", "scope", "url", "headers", "root_path", "client", "server_state",
    "timeout_keep_alive", "timeout_keep_alive_task",
)  # fmt: skip
# what it reads and sets on the request's cycle
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "disconnected", "message_event")


def test_the_installed_uvicorn_is_the_release_range_pyproject_allows():
    requirements = [Requirement(dep) for dep in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    (uvicorn_requirement,) = [req for req in requirements if req.name == "uvicorn"]
    assert uvicorn_requirement.specifier.contains(version("uvicorn")), (uvicorn_requirement, version("uvicorn"))
    assert any(spec.operator == "<" for spec in uvicorn_requirement.specifier), "uvicorn must have an upper bound"


def test_the_base_protocol_has_what_the_limited_one_uses():
    missing = [name for name in BASE_METHODS if not callable(getattr(httptools_impl.HttpToolsProtocol, name, None))]
    assert not missing, f"uvicorn {uvicorn.__version__}: HttpToolsProtocol lacks {missing}"
    assert isinstance(httptools_impl.STATUS_LINE, dict) and httptools_impl.STATUS_LINE[429].startswith(b"HTTP/1.1 429")
    assert "response_complete" in inspect.getsource(httptools_impl.RequestResponseCycle.__init__)


def test_a_connection_and_a_parsed_head_have_the_attributes_it_reads():
    async def answer(scope: dict, receive: object, send: object) -> None:
        pass

    class Transport(asyncio.Transport):
        """Enough of a socket's transport for the protocol to take a connection and parse a head."""

        def get_extra_info(self, name: str, default: object = None) -> object:
            return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

        def write(self, data: bytes) -> None:
            pass

        def is_closing(self) -> bool:
            return False

        def close(self) -> None:
            pass

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

    async def parse_one_head() -> tuple[LimitedHTTPProtocol, object]:
        config = uvicorn.Config(app=answer, lifespan="off", log_level="warning")
        config.load()
        protocol_class = LimitedHTTPProtocol.with_limits(HTTPLimits(max_header_bytes=65536, request_timeout_s=5))
        protocol = protocol_class(config=config, server_state=uvicorn.server.ServerState(), app_state={})
        protocol.connection_made(Transport())
        protocol.data_received(b"GET /x HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\n")
        cycle = protocol.cycle
        await asyncio.sleep(0)
        protocol.connection_lost(None)
        return protocol, cycle

    protocol, cycle = asyncio.run(parse_one_head())
    missing = [name for name in INSTANCE_ATTRIBUTES if not hasattr(protocol, name)]
    assert not missing, f"uvicorn {uvicorn.__version__}: HttpToolsProtocol instances lack {missing}"
    assert hasattr(protocol.server_state, "default_headers")
    missing = [name for name in CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
    assert not missing, f"uvicorn {uvicorn.__version__}: RequestResponseCycle lacks {missing}"
