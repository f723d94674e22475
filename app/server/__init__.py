"""How the service runs on a socket: the uvicorn configuration and shutdown (``runner``), the HTTP
protocol's limits and head hook (``http_protocol``, ``head_admission``), each request's context,
middleware and access log, and the dependencies every HTTP front door's routes share."""
