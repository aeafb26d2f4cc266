# medic-gateway: one image runs the gateway (`serve`) and the judge workers (`worker`).
# ENTRYPOINT is medic-gateway; the command names the role and its configuration file.
#
#   docker build -t medic-gateway:0.1.0 .                                  # CPU image (the default target)
#   docker build -t medic-gateway:0.1.0 --build-arg EXTRAS=providers .    # + litellm-translated providers
#   docker build -t medic-gateway:0.1.0-gpu --target gpu .               # workers with vLLM in-process
#
#   docker run -v ./gateway.yaml:/etc/medic-gateway/gateway.yaml:ro -p 8000:8000 medic-gateway:0.1.0
#   docker run -v ./worker.yaml:/etc/medic-gateway/worker.yaml:ro medic-gateway:0.1.0 \
#       worker --config /etc/medic-gateway/worker.yaml
#
# The build needs BuildKit (the default builder of Docker Engine 23 and later): with it, building one
# target builds only the stages that target needs, so the CPU image never pulls the CUDA base image.
#
# HEALTHCHECK: the same check serves both roles. It reads the command line of the container's main process:
# `worker` is checked on GET http://127.0.0.1:9464/healthz (worker.port) and anything else, `serve`, on
# GET http://127.0.0.1:8000/healthz (server.port); a `--port N` argument replaces the port. When the
# configuration file moves the port (server.port, worker.port) or binds a single address other than 0.0.0.0 or
# 127.0.0.1 (server.host, worker.host), set MEDIC_HEALTHCHECK_URL to the full /healthz URL instead.
# The worker answers 503 while Redis is unreachable, so an unhealthy worker is one that cannot work.

ARG PYTHON=3.11
# The GPU variant: any CUDA base image with a Debian or Ubuntu userland. PyPI's vLLM and torch wheels bring
# their own CUDA libraries; the base image provides the CUDA environment the NVIDIA container runtime expects.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04

# ---------------------------------------------------------------------------------------------- GPU variant
# Judge workers that load the judge model inside the worker process (judging.llm.backend: vllm).

FROM ${CUDA_IMAGE} AS gpu-build
ARG GPU_EXTRAS=vllm
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY corpora ./corpora
COPY gateway ./gateway
COPY judges ./judges
COPY pipeline ./pipeline
COPY policies ./policies
COPY protocol ./protocol
COPY text ./text
COPY upstreams ./upstreams
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install ".[${GPU_EXTRAS}]"

FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# Triton, under vLLM, compiles small C launchers when the engine starts: it needs a C compiler and Python.h.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 medic \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin medic \
 && mkdir -p /var/lib/medic-gateway /etc/medic-gateway \
 && chown 10001:10001 /var/lib/medic-gateway
COPY --from=gpu-build /opt/venv /opt/venv
WORKDIR /var/lib/medic-gateway
# Hub downloads (the judge model) go to the writable working directory; mount a volume there to keep them.
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HF_HOME=/var/lib/medic-gateway/huggingface
USER 10001:10001
EXPOSE 9464
# Loading the judge model takes minutes: the worker serves /healthz only once its judges are built.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request as r; a=open('/proc/1/cmdline','rb').read().decode().split('\\0'); p=a[a.index('--port')+1] if '--port' in a else ('9464' if 'worker' in a else '8000'); u=os.environ.get('MEDIC_HEALTHCHECK_URL') or f'http://127.0.0.1:{p}/healthz'; sys.exit(r.urlopen(u, timeout=4).status != 200)"]
ENTRYPOINT ["medic-gateway"]
CMD ["worker", "--config", "/etc/medic-gateway/worker.yaml"]

# ---------------------------------------------------------------------------------------------- CPU image

FROM python:${PYTHON}-slim-bookworm AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY corpora ./corpora
COPY gateway ./gateway
COPY judges ./judges
COPY pipeline ./pipeline
COPY policies ./policies
COPY protocol ./protocol
COPY text ./text
COPY upstreams ./upstreams
# A regular (not editable) install: the policy packs and data files travel as package data (pyproject.toml).
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install ".${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="medic-gateway" \
      org.opencontainers.image.description="OpenAI-compatible gateway that evaluates live clinical LLM traffic" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 medic \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin medic \
 && mkdir -p /var/lib/medic-gateway /etc/medic-gateway \
 && chown 10001:10001 /var/lib/medic-gateway
COPY --from=build /opt/venv /opt/venv
# The embedded results store (results.sqlite_path) and the policy audit log (policies.audit_path) are relative
# to the working directory by default: they are written here. Mount a volume to keep them.
WORKDIR /var/lib/medic-gateway
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
# 8000: the gateway (server.port). 9464: a worker's /metrics and /healthz (worker.port).
EXPOSE 8000 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request as r; a=open('/proc/1/cmdline','rb').read().decode().split('\\0'); p=a[a.index('--port')+1] if '--port' in a else ('9464' if 'worker' in a else '8000'); u=os.environ.get('MEDIC_HEALTHCHECK_URL') or f'http://127.0.0.1:{p}/healthz'; sys.exit(r.urlopen(u, timeout=4).status != 200)"]
ENTRYPOINT ["medic-gateway"]
# The configuration must listen beyond loopback (server.host: 0.0.0.0) and so configure gateway keys.
CMD ["serve", "--config", "/etc/medic-gateway/gateway.yaml"]
