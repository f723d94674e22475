"""Shared dependencies as ``Annotated`` aliases (the routes' only way to reach app state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .measured import MeasuredFigures
from .metrics import ServiceMetrics
from .model_pool import ModelPool
from .settings import Settings, get_settings


class ServiceNotStartedError(RuntimeError):
    """A request reached the app outside its lifespan (no models)."""


def get_pool(request: Request) -> ModelPool:
    pool = getattr(request.app.state, "pool", None)
    if pool is None:
        raise ServiceNotStartedError("the service has not started (its lifespan is not running)")
    return pool


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


def get_measured(request: Request) -> MeasuredFigures:
    return request.app.state.measured


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[ModelPool, Depends(get_pool)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
MeasuredDep = Annotated[MeasuredFigures, Depends(get_measured)]
