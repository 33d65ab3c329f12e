# syntax=docker/dockerfile:1.7
# ingest: HTTP API (8080) + references consumer. No torch: only the `ingest` extra is installed.
# Build from the repo root: docker build -f docker/ingest.Dockerfile -t ocrstream-ingest .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ocrstream ./ocrstream
COPY services ./services
COPY kernels ./kernels
# The venv is copied whole into the runtime stage (same base image, same path).
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[ingest,otlp]"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 ocrstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ocrstream --no-create-home ocrstream \
 && install -d -o 10001 -g 10001 /var/lib/ocrstream
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem: HOME and TMPDIR are the writable volumes the chart mounts.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/ocrstream \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/var/lib/ocrstream/cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
VOLUME ["/tmp", "/var/lib/ocrstream"]
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "ocrstream.services.ingest.main"]
