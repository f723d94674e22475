"""How the service runs on a socket: the uvicorn configuration built from :class:`Settings`.

``attnzoo serve`` and the tests' live servers both build their server here, so what a test
exercises is what production runs: the HTTP protocol with the service's limits
(``http_protocol.LimitedHTTPProtocol``) and the app's head hook (``head_admission.HeadAdmission``),
no WebSocket protocol (the service has no WebSocket route), and a graceful shutdown bounded by
the request deadline.
"""

from __future__ import annotations

import math
import signal
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ..settings import Settings
from .http_protocol import BODY_GRACE_S, HeadHook, HTTPLimits, LimitedHTTPProtocol

SHUTDOWN_MARGIN_S = 5.0  # after the last deadline: time to write the last answers and stop the batchers


def graceful_shutdown_s(settings: Settings) -> int:
    """Seconds a SIGTERM waits for the requests in flight before cancelling them.

    Every request ends within its deadline: answered, refused (504), or, when its upload stalls,
    answered 408 (the protocol closes it ``BODY_GRACE_S`` later at the latest). Orchestrators must
    allow at least this plus the model shutdown (k8s ``terminationGracePeriodSeconds``, compose
    ``stop_grace_period``).
    """
    return math.ceil(settings.request_timeout_s + BODY_GRACE_S + SHUTDOWN_MARGIN_S)


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` on ``settings.host:settings.port``, with the hook
    the app asks its server to call at each request's head (``app.head_hook``, if it has one)."""
    head_hook: HeadHook | None = getattr(app, "head_hook", None)
    limits = HTTPLimits(max_header_bytes=settings.max_header_bytes, request_timeout_s=settings.request_timeout_s)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the service writes its own JSON access log (middleware.py)
        lifespan="on",
        http=LimitedHTTPProtocol.with_limits(limits, head_hook=head_hook),
        ws="none",
        timeout_graceful_shutdown=graceful_shutdown_s(settings),
    )


class _Terminated(Exception):
    """SIGTERM, re-raised by uvicorn once it has shut down."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def serve(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then shut down gracefully and return.

    On either signal uvicorn stops accepting, lets the requests in flight end (within
    :func:`graceful_shutdown_s`), stops the app, then re-raises the signal it stopped on: a SIGINT
    arrives here as KeyboardInterrupt, a SIGTERM as :class:`_Terminated` (its default action would
    kill the process with status -15, which a supervisor reads as a crash). Both are a normal end.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        uvicorn.Server(uvicorn_config(app, settings)).run()
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
