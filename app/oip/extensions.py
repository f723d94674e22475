"""Triton's extensions of the protocol, answered from the service for both transports: model
configuration, statistics and the model repository (index; the parameters of load and unload).

The answers are the messages of ``proto/`` (Triton's names and fields): gRPC sends them as they
are, the HTTP transport writes them as Triton's JSON (``json_messages``). Load and unload are the
service's own (``VariantPool.load`` / ``unload``, behind the admin token), as ``POST /models/{v}/load``.
"""

from __future__ import annotations

from typing import Mapping

from ..core.pool import VariantSlot, VariantState
from ..core.service import InferenceService
from ..core.statistics import BatchStatistics, Duration, StatisticsSnapshot
from .contract import AUTO_MODEL, MODEL_VERSION, ParameterValue, check_version
from .errors import ExtensionRequestError
from .model_config import REQUEST_PARAMETERS, Scheduling, served_model_config, variant_parameters
from .proto import grpc_predict_v2_pb2 as pb

# The repository index's state of a variant (Triton's names).
INDEX_STATES = {VariantState.LOADED: "READY", VariantState.LOADING: "LOADING", VariantState.UNAVAILABLE: "UNAVAILABLE"}
UNLOAD_PARAMETERS = ("unload_dependents",)  # Triton's; accepted and ignored: no model depends on another here


# -- model configuration -------------------------------------------------------------------------


def model_config(service: InferenceService, name: str, version: str | None) -> pb.ModelConfig:
    """The configuration of a registry variant (loaded or not) or of ``auto``.

    Raises:
        UnknownVariantError, UnknownModelVersionError.
    """
    settings = service.settings
    if name == AUTO_MODEL:
        check_version(name, version)
        parameters = {
            "request_parameters": ",".join((*REQUEST_PARAMETERS, "budget_ms")),
            "default_budget_ms": f"{settings.default_budget_ms:g}",
            "variants": ",".join(served.variant for served in service.pool.served_variants()),
        }
        return served_model_config(AUTO_MODEL, Scheduling.of_service(settings, settings.device), parameters)
    slot = service.pool.slot(name)
    check_version(name, version)
    parameters = {**variant_parameters(slot.variant, slot.entry.name), "cpu_kernels": settings.cpu_kernels, "max_pixels": str(settings.max_pixels)}
    device = settings.device
    if slot.served is not None:
        device = slot.served.device
        parameters["weights_source"] = slot.served.weights_source
        if slot.served.sha256 is not None:
            parameters["sha256"] = slot.served.sha256
    return served_model_config(slot.variant, Scheduling.of_service(settings, device), parameters)


# -- statistics ---------------------------------------------------------------------------------


def model_statistics(service: InferenceService, name: str | None, version: str | None) -> pb.ModelStatisticsResponse:
    """The statistics of one variant, which must be loaded, or (``name`` empty) of every loaded one.

    Raises:
        UnknownVariantError, UnknownModelVersionError, VariantNotServedError, VariantNotReadyError;
        ExtensionRequestError for ``auto`` (its requests count for the variants that answered them).
    """
    pool = service.pool
    if not name:
        check_version("", version)
        return pb.ModelStatisticsResponse(model_stats=[_statistics(s.variant, s.statistics.snapshot()) for s in pool.served_variants()])
    if name == AUTO_MODEL:
        raise ExtensionRequestError(
            f"the model {AUTO_MODEL!r} has no statistics of its own: each of its requests counts in the statistics of the variant that answered it"
        )
    served = pool.served(name)
    check_version(name, version)
    return pb.ModelStatisticsResponse(model_stats=[_statistics(served.variant, served.statistics.snapshot())])


def _statistics(variant: str, snapshot: StatisticsSnapshot) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=variant,
        version=MODEL_VERSION,
        last_inference=snapshot.last_inference_ms,
        inference_count=snapshot.inference_count,
        execution_count=snapshot.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(snapshot.success),
            fail=_duration(snapshot.fail),
            queue=_duration(snapshot.queue),
            compute_input=_duration(snapshot.compute_input),
            compute_infer=_duration(snapshot.compute_infer),
            compute_output=_duration(snapshot.compute_output),
            cache_hit=pb.StatisticDuration(),  # no response cache
            cache_miss=pb.StatisticDuration(),
        ),
        batch_stats=[_batch(batch) for batch in snapshot.batches],
    )


def _batch(batch: BatchStatistics) -> pb.InferBatchStatistics:
    return pb.InferBatchStatistics(
        batch_size=batch.batch_size,
        compute_input=_duration(batch.compute_input),
        compute_infer=_duration(batch.compute_infer),
        compute_output=_duration(batch.compute_output),
    )


def _duration(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


# -- model repository ---------------------------------------------------------------------------


def repository_index(service: InferenceService, *, ready_only: bool) -> pb.RepositoryIndexResponse:
    """Every registry variant with its state (``ready_only``: the READY ones), in registry order."""
    entries = [_index_entry(slot) for slot in service.pool.slots.values()]
    return pb.RepositoryIndexResponse(models=[entry for entry in entries if entry.state == "READY" or not ready_only])


def _index_entry(slot: VariantSlot) -> pb.RepositoryIndexResponse.ModelIndex:
    state = INDEX_STATES[slot.state]
    reason = (slot.reason or "") if state == "UNAVAILABLE" else ""
    return pb.RepositoryIndexResponse.ModelIndex(name=slot.variant, version=MODEL_VERSION, state=state, reason=reason)


def index_json(index: pb.RepositoryIndexResponse) -> list[dict[str, str]]:
    """The index as Triton's HTTP transport answers it: a list, ``reason`` only where there is one."""
    return [
        {"name": model.name, "version": model.version, "state": model.state, **({"reason": model.reason} if model.reason else {})}
        for model in index.models
    ]


def check_control_parameters(action: str, parameters: Mapping[str, ParameterValue | bytes]) -> None:
    """The parameters of a load or unload (``action``): Triton's ``unload_dependents`` is taken.

    Raises:
        ExtensionRequestError: a configuration or model files sent with a load (Triton's
        ``config`` and ``file:...``: this service serves the registry's variants, configured by
        its settings), or any other parameter.
    """
    for name in parameters:
        if name == "config":
            raise ExtensionRequestError(
                f"{action}: parameter 'config' is not supported: a variant's configuration comes from the service's "
                "settings (ATTNZOO_*), not from the request"
            )
        if name.startswith("file:"):
            raise ExtensionRequestError(
                f"{action}: parameter {name!r} is not supported: a load reads the variant's weights from the weights dir "
                "(ATTNZOO_WEIGHTS_DIR), verified by hash, never files sent with the request"
            )
        if name not in UNLOAD_PARAMETERS or action != "unload":
            valid = ", ".join(UNLOAD_PARAMETERS) if action == "unload" else "none"
            raise ExtensionRequestError(f"{action}: unknown parameter {name!r}; valid: {valid}")
