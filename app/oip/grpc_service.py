"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``ATTNZOO_GRPC_PORT``.

:func:`serving_grpc` runs a ``grpc.aio`` server on the event loop of the HTTP service, for the
app's lifespan, so every front door shares the service's core (one copy of each model). Every RPC
goes through :meth:`InferenceServicer._answer`: the request id (metadata ``x-request-id`` when
it is a sane token, else a new one, sent back in the initial metadata), the access-log line and
the request metrics (protocol ``v2-grpc``; ``status`` is the HTTP status of the outcome), and
errors mapped to the gRPC status code of their error-table entry, with ``retry-after`` in the
trailing metadata where ``/detect`` sends ``Retry-After``. Inputs come as ``raw_input_contents``
or typed ``contents``; outputs always go as ``raw_output_contents``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, Iterable, Mapping, TypeVar

import grpc

from ..core.errors import InvalidParameterError
from ..core.metrics import PROTOCOL_V2_GRPC, ServiceMetrics
from ..core.pool import VariantSlot
from ..core.record import RequestRecord
from ..core.service import InferenceService
from ..core.variant_choice import AUTO_VARIANT
from ..error_bodies import CLIENT_CLOSED
from ..error_table import answer_for
from ..server.access_log import AccessLog
from ..server.context import request_id_from
from ..settings import Settings
from .contract import MODEL_VERSION, ParameterValue, check_version, model_metadata, server_metadata
from .errors import InferenceRequestError
from .inference import InputHeader, V2Request, check_inputs, infer, parse_parameters, requested_outputs
from .proto import grpc_predict_v2_pb2 as pb
from .proto import grpc_predict_v2_pb2_grpc as pb_grpc
from .tensors import bytes_from_list, bytes_from_raw, datatype_of, to_raw

logger = logging.getLogger("attnzoo.grpc")

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # "inference.GRPCInferenceService"
REQUEST_ID_KEY = "x-request-id"
RETRY_AFTER_KEY = "retry-after"

Response = TypeVar("Response")
Method = Callable[["InferenceServicer", object, grpc.aio.ServicerContext, RequestRecord], Awaitable[Response]]


class GrpcPortError(RuntimeError):
    """The gRPC port cannot be bound (in use, or not allowed)."""


def _rpc(method: Method[Response]) -> Callable[["InferenceServicer", object, grpc.aio.ServicerContext], Awaitable[Response]]:
    """A servicer method ``(self, request, context, record)`` as the RPC handler grpc calls."""

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: object, context: grpc.aio.ServicerContext) -> Response:
        return await self._answer(method, request, context)

    return handler


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs of the specification, over the service's core."""

    def __init__(self, service: InferenceService, settings: Settings, metrics: ServiceMetrics, *, version: str) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self.version = version
        self.access_log = AccessLog(metrics)

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context, record: RequestRecord) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context, record: RequestRecord) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.pool.is_ready(strict=self.settings.strict_readiness))

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context, record: RequestRecord) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._slot(request.name, request.version, record).served is not None)

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context, record: RequestRecord) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata(self.version))

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context, record: RequestRecord) -> pb.ModelMetadataResponse:
        metadata = model_metadata(self._slot(request.name, request.version, record))
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["outputs"]],
            parameters={name: _parameter(value) for name, value in metadata["parameters"].items()},
        )

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context, record: RequestRecord) -> pb.ModelInferResponse:
        if request.model_name != AUTO_VARIANT:
            self._slot(request.model_name, request.model_version, record)  # an unknown model first: NOT_FOUND
        check_version(request.model_name, request.model_version)
        client_s = context.time_remaining()
        infer_request = _v2_request(request)
        with self.service.open_ticket(
            request.model_name, record=record, budget_s=infer_request.parameters.budget_s, timeout_s=client_s
        ) as ticket:
            arrays = await infer(self.service, ticket, infer_request)
        response = pb.ModelInferResponse(model_name=ticket.variant, model_version=MODEL_VERSION, id=request.id)
        for name, array in arrays.items():
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(to_raw(array))
        return response

    def _slot(self, name: str, version: str, record: RequestRecord) -> VariantSlot:
        """The registry variant ``name``, recorded for the access log. Raises UnknownVariantError,
        UnknownModelVersionError."""
        slot = self.service.pool.slot(name)
        record.variant = slot.variant
        check_version(name, version)
        return slot

    async def _answer(self, method: Method[Response], request: object, context: grpc.aio.ServicerContext) -> Response:
        """Run one RPC: request id, errors → status codes, access log and metrics."""
        started = time.perf_counter()
        record = RequestRecord(request_id_from(_metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)))
        await context.send_initial_metadata(((REQUEST_ID_KEY, record.request_id),))
        status, code = 200, grpc.StatusCode.OK
        try:
            return await method(self, request, context, record)
        except asyncio.CancelledError:  # the client cancelled or went away: the core withdrew its images
            status, code, record.error = CLIENT_CLOSED, grpc.StatusCode.CANCELLED, "client_disconnected"
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code, as HTTP's handlers do
            answer = answer_for(exc, record.request_id)
            status, code = answer.status, answer.grpc_code
            record.error = answer.code
            retry = ((RETRY_AFTER_KEY, str(answer.retry_after_s)),) if answer.retry_after_s is not None else ()
            await context.abort(code, answer.message, trailing_metadata=retry)  # raises grpc's AbortError
        finally:
            path = f"/{SERVICE}/{method.__name__}"
            self.access_log.finish(
                record, protocol=PROTOCOL_V2_GRPC, endpoint=path, method="POST", path=path, query="", status=status,
                seconds=time.perf_counter() - started, client=_client(context.peer()), grpc_status=code.name,
            )  # fmt: skip


@asynccontextmanager
async def serving_grpc(service: InferenceService, settings: Settings, metrics: ServiceMetrics, *, version: str) -> AsyncIterator[None]:
    """Serve gRPC on ``settings.host:settings.grpc_port`` (nothing when the port is 0) until the
    block ends; RPCs in flight then get up to ``request_timeout_s`` to finish.

    Raises:
        GrpcPortError: the port cannot be bound.
    """
    if not settings.grpc_port:
        yield
        return
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a port shared with another process
            ("grpc.max_receive_message_length", settings.max_body_bytes),  # the HTTP body limit
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(service, settings, metrics, version=version), server)
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcPortError(f"cannot serve gRPC on {address} (ATTNZOO_GRPC_PORT, --grpc-port): {exc}") from None
    await server.start()
    logger.info("Open Inference Protocol over gRPC on %s", address)
    try:
        yield
    finally:
        await server.stop(grace=settings.request_timeout_s)


def _v2_request(request: pb.ModelInferRequest) -> V2Request:
    """The inference request a ``ModelInferRequest`` carries.

    Raises:
        InferenceRequestError, TensorDataError, InvalidParameterError.
    """
    count = check_inputs([InputHeader(t.name, t.datatype, tuple(t.shape)) for t in request.inputs])
    parameters = parse_parameters(_parameter_values(request.parameters))
    outputs = requested_outputs([output.name for output in request.outputs])
    return V2Request(request.id or None, _image_bytes(request, count), parameters, outputs)


def _image_bytes(request: pb.ModelInferRequest, count: int) -> list[bytes]:
    """The encoded images of the IMAGE input (the request's only input, checked by check_inputs)."""
    image = request.inputs[0]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise InferenceRequestError(
                f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} inputs; give one per input"
            )
        return bytes_from_raw(image.name, request.raw_input_contents[0], count)
    if image.HasField("contents"):
        return bytes_from_list(image.name, image.contents.bytes_contents, count)
    raise InferenceRequestError(f"input {image.name!r} has no data: give raw_input_contents or contents.bytes_contents")


def _parameter_values(parameters: Mapping[str, pb.InferParameter]) -> dict[str, ParameterValue]:
    values: dict[str, ParameterValue] = {}
    for name, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidParameterError(f"parameter {name!r} has no value")
        values[name] = getattr(parameter, choice)
    return values


def _parameter(value: ParameterValue) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=value)


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for item_key, value in metadata or ():
        if item_key == key:
            return value if isinstance(value, str) else None
    return None


def _client(peer: str) -> str:
    """grpc's peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) as the access log writes clients."""
    kind, _, address = peer.partition(":")
    return address if kind in ("ipv4", "ipv6") else peer
