"""``attnzoo serve``: build :class:`Settings` from the options (over ``ATTNZOO_*``), then serve.

``model_zoo``'s command line knows nothing of the service: it discovers this command through the
``attnzoo.commands`` entry point (pyproject.toml), so the import edge points from ``app`` to
``model_zoo`` only. Mistakes the command can see (unknown variant, bad metafile, ``cuda`` without
a GPU, bad ``ATTNZOO_*`` values) are one-line errors before anything is loaded.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from pydantic import ValidationError

from model_zoo import AttnzooError, load_registry, resolve_device

from .settings import ENV_PREFIX, LOG_LEVELS, Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the service: HTTP (/detect, /models, /v2, /healthz, /readyz, /metrics) and gRPC (Open Inference Protocol)",
        description="Serve the detectors over HTTP and gRPC. Every option can also be set as an ATTNZOO_* "
        "environment variable (ATTNZOO_HOST, ATTNZOO_PORT, ATTNZOO_GRPC_PORT, ATTNZOO_VARIANTS, ATTNZOO_DEVICE, "
        "ATTNZOO_MAX_BATCH, ATTNZOO_MAX_WAIT_MS, ATTNZOO_QUEUE_SIZE, ATTNZOO_REQUEST_TIMEOUT_S, "
        "ATTNZOO_MAX_BODY_BYTES, ATTNZOO_MAX_PIXELS, ...; see app/settings.py); options win over the environment.",
    )
    defaults = Settings.model_fields
    parser.add_argument("--host", default=None, help=f"interface to bind (env ATTNZOO_HOST, default {defaults['host'].default})")
    parser.add_argument("--port", type=int, default=None, help=f"TCP port (env ATTNZOO_PORT, default {defaults['port'].default})")
    parser.add_argument(
        "--grpc-port", type=int, default=None,
        help=f"gRPC port of the Open Inference Protocol (env ATTNZOO_GRPC_PORT, default {defaults['grpc_port'].default}; 0: no gRPC)",
    )  # fmt: skip
    parser.add_argument(
        "--variants", nargs="+", default=None, metavar="VARIANT", help="variants to load (default: every registry entry)"
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=None, help="auto (default): CUDA when present, else CPU"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="serve checkpoints whose sha256 does not match their file name"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve synthetic stand-in weights where the official files are missing (made once, cached in "
        "<weights dir>/demo/; env ATTNZOO_DEMO): to try the service without downloads; the detections mean nothing",
    )
    parser.add_argument(
        "--cpu-kernels", choices=["fast", "portable"], default=None,
        help="CPU kernels: fast (default) or portable, the ones CUDA runs (env ATTNZOO_CPU_KERNELS)",
    )  # fmt: skip
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="uvicorn log level (env ATTNZOO_LOG_LEVEL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    registry = load_registry(settings.metafile)  # $ATTNZOO_METAFILE or the bundled one
    registry.resolve_many(settings.variants)
    resolve_device(settings.device)
    if settings.grpc_port:
        _check_port_free(settings.host, settings.grpc_port, "gRPC port (ATTNZOO_GRPC_PORT, --grpc-port)")

    from .main import create_app  # imports FastAPI and the routers: only once the options are sound
    from .server.runner import serve

    serve(create_app(settings), settings)
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """The options given on the command line over the ``ATTNZOO_*`` environment.

    Raises:
        AttnzooError: one line naming each invalid value and where it came from.
    """
    given: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "grpc_port": args.grpc_port,
        "variants": args.variants,
        "device": args.device,
        "verify_hash": False if args.no_verify else None,
        "demo": True if args.demo else None,
        "cpu_kernels": args.cpu_kernels,
        "log_level": args.log_level,
        "metafile": args.metafile,
        "weights_dir": args.weights_dir,
    }
    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise AttnzooError(f"invalid settings: {problems}") from None


def _check_port_free(host: str, port: int, what: str) -> None:
    """Refuse a port another process holds before loading anything (the lifespan binds it later;
    a failure there would end in uvicorn's traceback). Raises AttnzooError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise AttnzooError(f"{what} {port} on {host} cannot be used: {exc.strerror or exc}") from None


def _problem(error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{ENV_PREFIX}{name.upper()} (--{name.replace('_', '-')}): {message}"
