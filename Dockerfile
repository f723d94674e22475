# syntax=docker/dockerfile:1
# attnzoo service image: `docker compose up` (GPU) or `docker compose --profile cpu up`.
#
# torch 2.14.1 from PyPI on x86_64 is a CUDA 13.0 build (it ships its own cuDNN/cuBLAS wheels),
# so the base is the matching CUDA 13.0 runtime; the host only needs an NVIDIA driver for CUDA 13
# and the NVIDIA Container Toolkit. The same image runs on CPU-only hosts with `--device cpu`.
# Ubuntu 24.04's python3 is 3.12, which satisfies the project's requires-python.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ---- builder: a venv with the project and its pinned dependencies -------------------------
FROM ${CUDA_IMAGE} AS builder
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, read from pyproject.toml itself (the one place they are pinned), so that
# a code change does not re-download torch. Only the runtime dependencies: no extras, no mmcv.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY README.md ./
COPY model_zoo ./model_zoo
COPY app ./app
RUN pip install --no-deps . && attnzoo --help > /dev/null

# ---- runtime: the venv, a non-root user, the weights volume -------------------------------
FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
# uid 1000 is taken by the base image's `ubuntu` user.
ARG APP_UID=10001
RUN useradd --create-home --uid ${APP_UID} --user-group attnzoo \
    && mkdir -p /weights \
    && chown attnzoo:attnzoo /weights

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 docker/entrypoint.sh docker/missing_weights.py /opt/attnzoo/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ATTNZOO_HOST=0.0.0.0 \
    ATTNZOO_PORT=8000 \
    ATTNZOO_WEIGHTS_DIR=/weights \
    ATTNZOO_FETCH_ON_START=0

USER attnzoo
WORKDIR /home/attnzoo
VOLUME /weights
EXPOSE 8000

# Liveness only (the process answers); compose and Kubernetes add readiness on /readyz.
# start-period covers loading and warming up four models; no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ATTNZOO_PORT', '8000'), timeout=4)"

ENTRYPOINT ["/opt/attnzoo/entrypoint.sh"]
