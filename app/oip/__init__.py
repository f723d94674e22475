"""The Open Inference Protocol (KServe v2) with Triton's extensions: a second front door beside ``/detect``.

Clients that speak v2 (tritonclient, KServe's SDK, Triton ensembles, perf_analyzer) reach the
same core (``app.core.service.InferenceService``) as ``/detect``: the same batcher, limits,
deadlines, errors and metrics. The package has no detection logic of its own:

    contract.py       the contract: input IMAGE, the four outputs, server and model metadata
    model_config.py   Triton's ModelConfig of the contract (also written by the Triton repository)
    extensions.py     Triton's extensions from the service: configuration, statistics, repository
    json_messages.py  protobuf messages as Triton's HTTP JSON
    tensors.py        tensor data, JSON and binary (raw), for both transports
    inference.py      one inference request → the core → output tensors, for both transports
    schemas.py        the JSON bodies of the HTTP transport (pydantic)
    http.py           the HTTP router: /v2/... on the service port
    grpc_service.py   the gRPC servicer, health and reflection (``inference.GRPCInferenceService``),
                      started by the app's lifespan on its event loop when ``ATTNZOO_GRPC_PORT`` is not 0
    proto/            grpc_predict_v2.proto and the modules scripts/generate-grpc makes of it
"""
