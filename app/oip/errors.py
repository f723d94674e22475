"""What the Open Inference Protocol's front door refuses, besides the core's errors."""

from __future__ import annotations

from ..core.errors import RETRY_AFTER_LOADING_S


class InferenceRequestError(ValueError):
    """A request the model cannot run: missing or extra inputs, wrong datatype or shape, an
    unknown output, malformed framing. The message says what was expected."""


class TensorDataError(ValueError):
    """Tensor data that does not match its datatype or shape; the message names the tensor."""


class ExtensionRequestError(ValueError):
    """A model configuration, statistics or repository request that cannot be answered as asked
    (the statistics of ``auto``, a load with parameters the service does not take); the message
    says why."""


class ServerNotReadyError(RuntimeError):
    """Some requested variant is still loading or unavailable (``/v2/health/ready``)."""

    retry_after_s = RETRY_AFTER_LOADING_S

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__("not ready: " + "; ".join(f"{variant}: {reason}" for variant, reason in reasons.items()))
