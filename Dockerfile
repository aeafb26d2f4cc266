# medic-gateway: one image runs `serve` and `worker` (ENTRYPOINT medic-gateway; pass the subcommand).
# Build: docker build -t medic-gateway .      Providers extra: --build-arg EXTRAS=providers
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY judges ./judges
COPY policies ./policies
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir ".${EXTRAS:+[$EXTRAS]}"

FROM python:${PYTHON}-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin medic \
 && mkdir -p /var/lib/medic-gateway && chown 10001 /var/lib/medic-gateway
COPY --from=build /opt/venv /opt/venv
# The embedded results store (results.sqlite_path, relative by default) is written here.
WORKDIR /var/lib/medic-gateway
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["medic-gateway"]
# Mount a config with keys configured to listen on all interfaces: serve --config /etc/medic-gateway/gateway.yaml
CMD ["serve", "--config", "/etc/medic-gateway/gateway.yaml"]
