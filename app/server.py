"""How the service runs on a socket: the uvicorn configuration built from :class:`Settings`.

``attnzoo serve`` and the tests' live servers both build their server here, so what a test
exercises is what production runs.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from .settings import Settings


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` on ``settings.host:settings.port``."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the service writes its own JSON access log (middleware.py)
        lifespan="on",
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM.

    uvicorn re-raises the signal it stopped on once it has shut down; a SIGINT then arrives here
    as KeyboardInterrupt after a clean stop, which is a normal end (as in ``uvicorn.run``).
    """
    try:
        uvicorn.Server(uvicorn_config(app, settings)).run()
    except KeyboardInterrupt:
        pass
