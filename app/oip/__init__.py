"""The Open Inference Protocol (KServe v2): a second front door beside ``/detect``.

Clients that speak v2 (tritonclient, KServe's SDK, Triton ensembles, perf_analyzer) reach the
same :class:`~app.variant_core.VariantCore` of each variant as ``/detect``: the same batcher,
limits, deadlines, errors and metrics. The package has no detection logic of its own:

    metadata.py      the contract: input IMAGE, the four outputs, server and model metadata
    tensors.py       tensor data, JSON and binary (raw), for both transports
    inference.py     one inference request → the core → output tensors, for both transports
    schemas.py       the JSON bodies of the HTTP transport (pydantic)
    http.py          the HTTP router: /v2/... on the service port
    grpc_service.py  the gRPC servicer and server (``inference.GRPCInferenceService``), started
                     by the app's lifespan on its event loop when ``ATTNZOO_GRPC_PORT`` is not 0
    proto/           grpc_predict_v2.proto and the modules scripts/generate-grpc makes of it
"""
