"""``attnzoo serve``: run the HTTP service (``app/``) with uvicorn.

The options become ``ATTNZOO_*`` environment variables, which the service's settings read, and
uvicorn imports the app factory by name (``app.main:create_app``), so ``model_zoo`` never imports
``app``. Mistakes the CLI can see (unknown variant, bad metafile, ``cuda`` without a GPU, bad
``ATTNZOO_*`` values) are one-line errors before anything is loaded.
"""

from __future__ import annotations

import argparse
import os

from model_zoo.errors import AttnzooError
from model_zoo.registry import METAFILE_ENV, WEIGHTS_DIR_ENV, load_registry

APP_FACTORY = "app.main:create_app"
ENV_PREFIX = "ATTNZOO_"
DEFAULT_HOST = "127.0.0.1"  # the service settings' default too; the container sets ATTNZOO_HOST=0.0.0.0
DEFAULT_PORT = 8000


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[common],
        help="run the HTTP service (/detect, /models, /healthz, /readyz, /metrics)",
        description="Serve the detectors over HTTP. Every option can also be set as an ATTNZOO_* "
        "environment variable (ATTNZOO_HOST, ATTNZOO_PORT, ATTNZOO_VARIANTS, ATTNZOO_DEVICE, "
        "ATTNZOO_MAX_BATCH, ATTNZOO_MAX_WAIT_MS, ATTNZOO_QUEUE_SIZE, ATTNZOO_REQUEST_TIMEOUT_S, "
        "ATTNZOO_MAX_BODY_BYTES, ATTNZOO_MAX_PIXELS, ...); options win over the environment.",
    )
    parser.add_argument("--host", default=None, help=f"interface to bind (env ATTNZOO_HOST, default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=None, help=f"TCP port (env ATTNZOO_PORT, default {DEFAULT_PORT})")
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
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _export(args)
    host = os.environ.get(f"{ENV_PREFIX}HOST", DEFAULT_HOST)
    port = _port(os.environ.get(f"{ENV_PREFIX}PORT", str(DEFAULT_PORT)))
    _preflight()

    import uvicorn  # only this command needs it
    from pydantic import ValidationError

    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            log_level=args.log_level,
            access_log=False,  # the service writes its own JSON access log
            lifespan="on",
        )
    except ValidationError as exc:  # the service's settings refused an ATTNZOO_* value
        problems = "; ".join(f"{ENV_PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors() if e["loc"])
        raise AttnzooError(f"invalid settings: {problems}") from None
    return 0


def _export(args: argparse.Namespace) -> None:
    """Options → ATTNZOO_* variables for the service's settings (set only what was given)."""
    given = {
        "HOST": args.host,
        "PORT": None if args.port is None else str(args.port),
        "VARIANTS": None if args.variants is None else ",".join(args.variants),
        "DEVICE": args.device,
        "VERIFY_HASH": "false" if args.no_verify else None,
    }
    for name, value in given.items():
        if value is not None:
            os.environ[f"{ENV_PREFIX}{name}"] = value
    if args.metafile is not None:
        os.environ[METAFILE_ENV] = os.path.abspath(args.metafile)
    if args.weights_dir is not None:
        os.environ[WEIGHTS_DIR_ENV] = os.path.abspath(args.weights_dir)


def _preflight() -> None:
    """Fail fast, with one line, on what would otherwise surface as a traceback at start-up."""
    registry = load_registry()  # $ATTNZOO_METAFILE or the bundled one
    names = os.environ.get(f"{ENV_PREFIX}VARIANTS", "").replace(",", " ").split()
    for name in names:
        registry.resolve(name)
    device = os.environ.get(f"{ENV_PREFIX}DEVICE", "auto")
    try:
        from model_zoo.predictor import resolve_device  # imports torch: only when a device is named
        resolve_device(device)
    except (RuntimeError, ValueError):  # torch's message for a malformed device string
        raise AttnzooError(f"invalid device {device!r} (ATTNZOO_DEVICE/--device): expected auto, cpu or cuda") from None


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise AttnzooError(f"invalid port {text!r} (ATTNZOO_PORT/--port): expected an integer 1..65535") from None
    if not 1 <= port <= 65535:
        raise AttnzooError(f"invalid port {port} (ATTNZOO_PORT/--port): expected 1..65535")
    return port
