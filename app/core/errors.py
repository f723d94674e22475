"""What the core refuses or fails with, whatever the protocol: the front doors map these to their
status codes through the error table (``app/error_table.py``). Each message says what was wrong;
the errors a client should retry carry ``retry_after_s`` (whole seconds)."""

from __future__ import annotations

from typing import Sequence

# Retry-After (seconds) for a variant that is not loaded: soon while loading, later when it failed
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_UNAVAILABLE_S = 60


class OverloadedError(Exception):
    """The variant's queue cannot take the request now; retry after ``retry_after_s`` (>= 1)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OverloadedError):
    """The queue holds too many requests already to take ``count`` more."""

    def __init__(self, name: str, waiting: int, count: int, queue_size: int, retry_after_s: int) -> None:
        more = "" if count == 1 else f" and holds {queue_size}: {count} images do not fit"
        super().__init__(f"{name}: {waiting} requests are already waiting{more}; retry in {retry_after_s} s", retry_after_s)


class DeadlineUnreachableError(OverloadedError):
    """The work ahead would keep this request past its deadline."""

    def __init__(self, name: str, waiting: int, predicted_s: float, budget_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"{name}: with {waiting} requests waiting the answer would take about {predicted_s:.1f} s, "
            f"past the deadline in {budget_s:.1f} s; retry in {retry_after_s} s",
            retry_after_s,
        )


class DeadlineExceededError(Exception):
    """The request's deadline passed before the model reached it."""


class BatcherClosedError(Exception):
    """The variant's batcher was shut down (service stopping)."""


class TooManyImagesError(ValueError):
    """More images in one request than the variant's queue holds: it could never be answered."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the request holds {count} images; at most {limit} fit in one request (ATTNZOO_QUEUE_SIZE)")


class InvalidParameterError(ValueError):
    """A request parameter with a value the service does not accept; the message names valid ones."""


class ImageUnprocessableError(ValueError):
    """A decoded image that the model's pre-processing cannot take."""


class ModelExecutionError(RuntimeError):
    """The model failed on a batch holding this request (logged with the request id)."""


class VariantNotServedError(Exception):
    """The variant is in the registry, but this process was not started with it: it never loads here."""

    def __init__(self, variant: str, served: Sequence[str]) -> None:
        super().__init__(
            f"variant {variant!r} is not served by this process, which was started with the variants "
            f"{', '.join(served)} (ATTNZOO_VARIANTS); restart it with {variant} among them (or without "
            "ATTNZOO_VARIANTS: every variant) to serve it"
        )
        self.variant = variant
        self.served = list(served)


class VariantNotReadyError(Exception):
    """The variant exists in the registry but cannot answer now: loading, or unavailable (``reason``)."""

    def __init__(self, variant: str, loading: bool, reason: str | None) -> None:
        why = "is still loading" if loading else f"is unavailable: {reason}"
        super().__init__(f"variant {variant!r} {why}")
        self.variant = variant
        self.retry_after_s = RETRY_AFTER_LOADING_S if loading else RETRY_AFTER_UNAVAILABLE_S


class NoVariantLoadedError(Exception):
    """No variant can answer now: every requested one is loading or unavailable."""

    retry_after_s = RETRY_AFTER_LOADING_S


class ServiceNotStartedError(RuntimeError):
    """A request reached the service outside its lifespan (no models)."""


class ControlBusyError(Exception):
    """Another load or unload of the pool is running; try again when it is done."""

    retry_after_s = RETRY_AFTER_LOADING_S


class WeightsRefusedError(Exception):
    """A load found weights it cannot serve; the variant's previous model (if any) keeps serving."""


class ModelControlDisabledError(Exception):
    """No admin token is configured."""


class NotAuthorizedError(Exception):
    """The request carries no bearer token, or the wrong one."""

    headers = {"WWW-Authenticate": 'Bearer realm="attnzoo model control"'}
