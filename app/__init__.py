"""attnzoo's HTTP service (FastAPI): build it with :func:`app.main.create_app`."""
