# attnzoo service image: `docker compose up` (GPU) or `docker compose --profile cpu up`.
#
# Built by the builder's built-in Dockerfile frontend (there is deliberately no `# syntax=` line:
# it would make BuildKit pull a frontend image from a registry). It needs BuildKit for the pip
# cache mounts: `DOCKER_BUILDKIT=1 docker build -t attnzoo .` (Docker >= 20.10; the buildx
# plugin is not needed with Docker 20.10's own client, newer clients use buildx).
#
# BASE_IMAGE: torch 2.14.1 from PyPI on x86_64 is a CUDA 13.0 build (it ships its own cuDNN and
# cuBLAS wheels), so the default base is the matching CUDA 13.0 runtime; the host only needs an
# NVIDIA driver for CUDA 13 and the NVIDIA Container Toolkit. Any Debian/Ubuntu image with a
# python3 >= 3.11 works as the base for CPU-only use (scripts/container-smoke builds on Debian 12,
# made with debootstrap); the same image also runs on CPU-only hosts with `--device cpu`.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04

# ---- python: the base image with the system python3 (the stages below start here) ---------
FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- requirements: the runtime dependencies, read from pyproject.toml -----------------------
# A stage of its own so that the files it writes, not pyproject.toml, key the install layers:
# a pyproject.toml change that leaves the dependencies alone reinstalls nothing.
FROM python AS requirements
COPY pyproject.toml docker/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml /requirements

# ---- runtime: venv (torch layer, other dependencies, the project), non-root user ------------
FROM python AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
# Layers from the least to the most often changed. pip's cache lives in a BuildKit cache mount
# (not in the image), so a rebuilt layer does not download again what an earlier build fetched.
COPY --from=requirements /requirements/torch.txt /requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /requirements/torch.txt
COPY --from=requirements /requirements/others.txt /requirements/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /requirements/torch.txt -r /requirements/others.txt

# uid 1000 is taken by the CUDA base image's `ubuntu` user.
ARG APP_UID=10001
RUN useradd --create-home --uid ${APP_UID} --user-group attnzoo \
    && mkdir -p /weights \
    && chown attnzoo:attnzoo /weights
COPY --chmod=0755 docker/entrypoint.sh docker/missing_weights.py /opt/attnzoo/

# The project itself, last: a code change rebuilds only this layer (a few hundred KiB). The
# build context is bound read-write for the build only, so the sources do not stay in the image.
RUN --mount=type=bind,source=.,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps /src \
    && attnzoo --help > /dev/null

ENV PYTHONUNBUFFERED=1 \
    ATTNZOO_HOST=0.0.0.0 \
    ATTNZOO_PORT=8000 \
    ATTNZOO_GRPC_PORT=8001 \
    ATTNZOO_WEIGHTS_DIR=/weights \
    ATTNZOO_FETCH_ON_START=0

USER attnzoo
WORKDIR /home/attnzoo
VOLUME /weights
# HTTP (/detect, /v2/..., /metrics) and gRPC (KServe v2 GRPCInferenceService; 0 turns it off).
EXPOSE 8000 8001

# Liveness only (the process answers); compose and Kubernetes add readiness on /readyz.
# start-period covers loading and warming up four models; no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD python -c "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ATTNZOO_PORT', '8000'), timeout=4)"

ENTRYPOINT ["/opt/attnzoo/entrypoint.sh"]
