"""``grpc_predict_v2.proto`` (written for attnzoo from KServe's specification) and the Python
modules generated from it by ``scripts/generate-grpc``: never edit the ``*_pb2*`` files by hand."""
