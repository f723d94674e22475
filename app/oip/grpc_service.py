"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``ATTNZOO_GRPC_PORT``,
with gRPC's standard health service and server reflection beside it.

:func:`serving_grpc` runs a ``grpc.aio`` server on the event loop of the HTTP service, for the
app's lifespan, so every front door shares the service's core (one copy of each model). Every
unary RPC goes through :meth:`InferenceServicer._answer`: the request id (metadata ``x-request-id``
when it is a sane token, else a new one, sent back in the initial metadata), the access-log line
and the request metrics (protocol ``v2-grpc``; ``status`` is the gRPC status code's name), and
errors mapped to the gRPC status code of their error-table entry, with ``retry-after`` in the
trailing metadata where ``/detect`` sends ``Retry-After``. Inputs come as ``raw_input_contents``
or typed ``contents``; outputs always go as ``raw_output_contents``.

Besides the specification's RPCs, Triton's extensions: ``ModelStreamInfer`` (each request of the
stream is answered on it, in the order sent, with its ``id``; a failure is a stream message with
``error_message``, and the stream goes on; each request is logged and counted as a ``ModelInfer``
is), ``ModelConfig``, ``ModelStatistics``, ``RepositoryIndex``, and ``RepositoryModelLoad`` /
``RepositoryModelUnload`` (metadata ``authorization: Bearer <ATTNZOO_ADMIN_TOKEN>``, as
``POST /models/{v}/load``). An RPC the service does not have is answered ``UNIMPLEMENTED``,
counted (endpoint ``unmatched``) and logged once.

``grpc.health.v1.Health`` (Check and Watch): the service ``""`` (and ``inference.GRPCInferenceService``)
is SERVING while the server is ready (``/v2/health/ready``), each variant by its alias while it is
loaded; they follow loads and unloads. Reflection (``grpc.reflection.v1alpha``) describes the three
services.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, TypeVar

import grpc
from fastapi.security import HTTPAuthorizationCredentials
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ..core.errors import InvalidParameterError
from ..core.metrics import PROTOCOL_V2_GRPC, ServiceMetrics
from ..core.pool import VariantSlot
from ..core.record import RequestRecord
from ..core.service import InferenceService
from ..error_bodies import CLIENT_CLOSED
from ..error_table import answer_for
from ..server.access_log import AccessLog
from ..server.context import request_id_from
from ..server.middleware import UNMATCHED_ENDPOINT
from ..server.model_control import Action, control, require_admin
from ..settings import Settings
from .contract import AUTO_MODEL, MODEL_VERSION, ModelMetadata, ParameterValue, auto_metadata, check_version, model_metadata, server_metadata
from .errors import InferenceRequestError
from .extensions import check_control_parameters, model_config, model_statistics, repository_index
from .inference import InputHeader, V2Request, check_inputs, infer, parse_parameters, requested_outputs
from .proto import grpc_predict_v2_pb2 as pb
from .proto import grpc_predict_v2_pb2_grpc as pb_grpc
from .tensors import bytes_from_list, bytes_from_raw, datatype_of, to_raw

logger = logging.getLogger("attnzoo.grpc")

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # "inference.GRPCInferenceService"
REQUEST_ID_KEY = "x-request-id"
RETRY_AFTER_KEY = "retry-after"
AUTHORIZATION_KEY = "authorization"
FINAL_RESPONSE = "triton_final_response"  # on every stream answer: the request's only (and last) response
# Reflection finds services in one descriptor pool: the health and reflection files join our
# messages' pool (protobuf accepts a file added again unchanged).
for _file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
    pb.DESCRIPTOR.pool.AddSerializedFile(_file.serialized_pb)

Response = TypeVar("Response")
Method = Callable[["InferenceServicer", Any, grpc.aio.ServicerContext, RequestRecord], Awaitable[Response]]


@dataclass(frozen=True)
class UndecodableRequest:
    """What the service's RPCs are handed for request bytes that are not their message."""

    message: str  # what was wrong, for the client


class TolerantDecoding(grpc.aio.ServerInterceptor):
    """Hands the service's RPCs an :class:`UndecodableRequest` for bytes that do not parse, so that
    they answer ``INVALID_ARGUMENT`` (logged and counted like any refused request); grpc's own
    answer to a parser error is ``UNKNOWN`` with the exception's class name. The health and
    reflection services keep grpc's answer."""

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None or not details.method.startswith(f"/{SERVICE}/"):
            return handler
        parse = handler.request_deserializer
        message_name = details.method.rsplit("/", 1)[-1]

        def tolerant(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError as exc:
                return UndecodableRequest(f"the {message_name} request is not a valid protobuf message ({exc})")

        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(handler.unary_unary, tolerant, serialize)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(handler.unary_stream, tolerant, serialize)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(handler.stream_unary, tolerant, serialize)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(handler.stream_stream, tolerant, serialize)
        return handler


class GrpcPortError(RuntimeError):
    """The gRPC port cannot be bound (in use, or not allowed)."""


def _rpc(method: Method[Response]) -> Callable[["InferenceServicer", Any, grpc.aio.ServicerContext], Awaitable[Response]]:
    """A servicer method ``(self, request, context, record)`` as the RPC handler grpc calls."""

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Response:
        return await self._answer(method, request, context)

    return handler


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The RPCs of the specification and Triton's extensions, over the service's core."""

    def __init__(self, service: InferenceService, metrics: ServiceMetrics) -> None:
        self.service = service
        self.metrics = metrics
        self.access_log = AccessLog(metrics)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext, record: RequestRecord) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext, record: RequestRecord) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.pool.is_ready(strict=self.settings.strict_readiness))

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext, record: RequestRecord) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._slot(request.name, request.version, record).served is not None)

    @_rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.ServerMetadataResponse:
        metadata = server_metadata()
        return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)

    @_rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.ModelMetadataResponse:
        metadata: ModelMetadata
        if request.name == AUTO_MODEL:
            check_version(request.name, request.version)
            metadata = auto_metadata(self.settings.default_budget_ms)
        else:
            metadata = model_metadata(self._slot(request.name, request.version, record))
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=metadata.versions,
            platform=metadata.platform,
            inputs=[pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape) for s in metadata.inputs],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(name=s.name, datatype=s.datatype, shape=s.shape) for s in metadata.outputs],
            parameters={name: infer_parameter(value) for name, value in metadata.parameters.items()},
        )

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext, record: RequestRecord) -> pb.ModelInferResponse:
        return await self._infer(request, context.time_remaining(), record)

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest | UndecodableRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request of the stream runs as it arrives; the answers go back in the order sent."""
        stream_id = request_id_from(_metadata_value(context.invocation_metadata(), REQUEST_ID_KEY))
        await context.send_initial_metadata(((REQUEST_ID_KEY, stream_id),))
        answers: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await answers.put(asyncio.ensure_future(self._stream_answer(request, context, stream_id)))
            finally:
                await answers.put(None)

        reader = asyncio.ensure_future(read())
        running: list[asyncio.Future[pb.ModelStreamInferResponse]] = []
        try:
            while (answer := await answers.get()) is not None:
                running.append(answer)
                yield await answer
                running.remove(answer)
        finally:
            reader.cancel()
            while not answers.empty():
                left = answers.get_nowait()
                if left is not None:
                    running.append(left)
            for answer in running:
                answer.cancel()

    async def _stream_answer(
        self, request: pb.ModelInferRequest | UndecodableRequest, context: grpc.aio.ServicerContext, stream_id: str
    ) -> pb.ModelStreamInferResponse:
        """One request of a stream, answered (or its failure), logged and counted as a ModelInfer."""
        started = time.perf_counter()
        record = RequestRecord(request_id_from(None))
        status, code = 200, grpc.StatusCode.OK
        try:
            if isinstance(request, UndecodableRequest):
                raise InferenceRequestError(request.message)
            response = await self._infer(request, context.time_remaining(), record)
            response.parameters[FINAL_RESPONSE].bool_param = True
            return pb.ModelStreamInferResponse(infer_response=response)
        except asyncio.CancelledError:
            status, code, record.error = CLIENT_CLOSED, grpc.StatusCode.CANCELLED, "client_disconnected"
            raise
        except Exception as exc:  # noqa: BLE001 - a failed request is a stream message; the stream goes on
            answer = answer_for(exc, record.request_id)
            status, code, record.error = answer.status, answer.grpc_code, answer.code
            request_id = "" if isinstance(request, UndecodableRequest) else request.id
            return pb.ModelStreamInferResponse(error_message=answer.message, infer_response=pb.ModelInferResponse(id=request_id))
        finally:
            self._finish(record, "ModelStreamInfer", context, status, code, started, stream_id=stream_id)

    async def _infer(self, request: pb.ModelInferRequest, time_left_s: float | None, record: RequestRecord) -> pb.ModelInferResponse:
        """Run one inference request within the client's ``time_left_s`` (None: no deadline of its own)."""
        if request.model_name != AUTO_MODEL:
            self._slot(request.model_name, request.model_version, record)  # an unknown model first: NOT_FOUND
        check_version(request.model_name, request.model_version)
        infer_request = _v2_request(request)
        with self.service.open_ticket(
            request.model_name, record=record, budget_s=infer_request.parameters.budget_s, timeout_s=time_left_s
        ) as ticket:
            arrays = await infer(self.service, ticket, infer_request)
        response = pb.ModelInferResponse(model_name=ticket.variant, model_version=MODEL_VERSION, id=request.id)
        for name, array in arrays.items():
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(to_raw(array))
        return response

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext, record: RequestRecord) -> pb.ModelConfigResponse:
        config = model_config(self.service, request.name, request.version)
        record.variant = config.name if config.name != AUTO_MODEL else ""
        return pb.ModelConfigResponse(config=config)

    @_rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.ModelStatisticsResponse:
        answer = model_statistics(self.service, request.name, request.version)
        if request.name:
            record.variant = answer.model_stats[0].name
        return answer

    @_rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.RepositoryIndexResponse:
        return repository_index(self.service, ready_only=request.ready)

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.RepositoryModelLoadResponse:
        await self._control("load", request.model_name, request.parameters, context, record)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> pb.RepositoryModelUnloadResponse:
        await self._control("unload", request.model_name, request.parameters, context, record)
        return pb.RepositoryModelUnloadResponse()

    async def _control(
        self, action: Action, name: str, parameters: Mapping[str, pb.ModelRepositoryParameter], context: grpc.aio.ServicerContext, record: RequestRecord
    ) -> None:
        """Load or unload ``name`` for a client that holds the admin token (``authorization`` metadata).

        Raises:
            ModelControlDisabledError, NotAuthorizedError, ExtensionRequestError, and the errors of the control.
        """
        scheme, _, token = (_metadata_value(context.invocation_metadata(), AUTHORIZATION_KEY) or "").strip().partition(" ")
        bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        await require_admin(self.settings, bearer)
        check_control_parameters(action, {key: _repository_value(value) for key, value in parameters.items()})
        await control(action, name, self.service, self.metrics, record)

    def _slot(self, name: str, version: str, record: RequestRecord) -> VariantSlot:
        """The registry variant ``name``, recorded for the access log. Raises UnknownVariantError,
        UnknownModelVersionError."""
        slot = self.service.pool.slot(name)
        record.variant = slot.variant
        check_version(name, version)
        return slot

    async def _answer(self, method: Method[Response], request: Any, context: grpc.aio.ServicerContext) -> Response:
        """Run one RPC: request id, errors → status codes, access log and metrics."""
        started = time.perf_counter()
        record = RequestRecord(request_id_from(_metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)))
        await context.send_initial_metadata(((REQUEST_ID_KEY, record.request_id),))
        status, code = 200, grpc.StatusCode.OK
        try:
            if isinstance(request, UndecodableRequest):
                raise InferenceRequestError(request.message)
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
            raise  # not reached: abort raises
        finally:
            self._finish(record, method.__name__, context, status, code, started)

    def _finish(
        self, record: RequestRecord, method: str, context: grpc.aio.ServicerContext, status: int, code: grpc.StatusCode, started: float, **fields: object
    ) -> None:
        path = f"/{SERVICE}/{method}"
        self.access_log.finish(
            record, protocol=PROTOCOL_V2_GRPC, endpoint=path, method="POST", path=path, query="", status=status,
            seconds=time.perf_counter() - started, client=_client(context.peer()), grpc_status=code.name, **fields,
        )  # fmt: skip


class UnknownMethods(grpc.GenericRpcHandler):
    """Answers any RPC no service has with ``UNIMPLEMENTED``: counted under the endpoint ``unmatched``
    and logged the first time each is asked for (consulted after every service)."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def unimplemented(requests: Any, context: grpc.aio.ServicerContext) -> None:
            started = time.perf_counter()
            record = RequestRecord(request_id_from(_metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)))
            record.error = "unimplemented"
            self.access_log.unknown(PROTOCOL_V2_GRPC, method, record.request_id)
            self.access_log.finish(
                record, protocol=PROTOCOL_V2_GRPC, endpoint=UNMATCHED_ENDPOINT, method="POST", path=method, query="", status=404,
                seconds=time.perf_counter() - started, client=_client(context.peer()), grpc_status=grpc.StatusCode.UNIMPLEMENTED.name,
            )  # fmt: skip
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not a method of this server")

        return grpc.stream_stream_rpc_method_handler(unimplemented)


class HealthStatuses:
    """Keeps ``grpc.health.v1`` statuses in step with the service: ``""`` and the inference service
    follow the server's readiness, each variant (by alias) its being loaded."""

    def __init__(self, service: InferenceService, loop: asyncio.AbstractEventLoop) -> None:
        self.service = service
        self.servicer = health.aio.HealthServicer()
        self.loop = loop
        self.closed = False
        self._lock = asyncio.Lock()

    def changed(self) -> None:
        """A variant's state changed (any thread): publish the statuses on the event loop."""
        if not self.closed:
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.publish()))

    async def publish(self) -> None:
        async with self._lock:  # one publication at a time, each of the state when it runs
            if self.closed:
                return
            pool = self.service.pool
            ready = pool.is_ready(strict=self.service.settings.strict_readiness)
            statuses = {"": ready, SERVICE: ready, **{variant: slot.served is not None for variant, slot in pool.slots.items()}}
            for name, serving in statuses.items():
                await self.servicer.set(name, health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING)

    async def close(self) -> None:
        """Every status NOT_SERVING (watchers hear it) and no more publications."""
        async with self._lock:
            self.closed = True
            await self.servicer.enter_graceful_shutdown()


@asynccontextmanager
async def serving_grpc(service: InferenceService, settings: Settings, metrics: ServiceMetrics) -> AsyncIterator[None]:
    """Serve gRPC on ``settings.host:settings.grpc_port`` (nothing when the port is 0) until the
    block ends; RPCs in flight then get up to ``request_timeout_s`` to finish.

    Raises:
        GrpcPortError: the port cannot be bound.
    """
    if not settings.grpc_port:
        yield
        return
    server = grpc.aio.server(
        interceptors=(TolerantDecoding(),),
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a port shared with another process
            ("grpc.max_receive_message_length", settings.max_body_bytes),  # the HTTP body limit
        ]
    )
    servicer = InferenceServicer(service, metrics)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    statuses = HealthStatuses(service, asyncio.get_running_loop())
    health_pb2_grpc.add_HealthServicer_to_server(statuses.servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=pb.DESCRIPTOR.pool)
    server.add_generic_rpc_handlers((UnknownMethods(servicer.access_log),))
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else f"{settings.host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcPortError(f"cannot serve gRPC on {address} (ATTNZOO_GRPC_PORT, --grpc-port): {exc}") from None
    service.pool.on_change(statuses.changed)
    await statuses.publish()
    await server.start()
    logger.info("Open Inference Protocol over gRPC on %s", address)
    try:
        yield
    finally:
        await statuses.close()
        await server.stop(grace=settings.request_timeout_s)


def _v2_request(request: pb.ModelInferRequest) -> V2Request:
    """The inference request a ``ModelInferRequest`` carries.

    Raises:
        InferenceRequestError, TensorDataError, InvalidParameterError.
    """
    image = check_inputs([InputHeader(t.name, t.datatype, tuple(t.shape)) for t in request.inputs])
    parameters = parse_parameters(_parameter_values(request.parameters))
    outputs = requested_outputs([output.name for output in request.outputs])
    return V2Request(request.id or None, _image_bytes(request, image.count), image.rows, parameters, outputs)


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


def _repository_value(parameter: pb.ModelRepositoryParameter) -> ParameterValue | bytes:
    choice = parameter.WhichOneof("parameter_choice")
    value: ParameterValue | bytes = getattr(parameter, choice) if choice is not None else False
    return value


def infer_parameter(value: ParameterValue) -> pb.InferParameter:
    """``value`` in the protobuf field of its type (a bool is an int to Python: checked first)."""
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
