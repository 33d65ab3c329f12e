# syntax=docker/dockerfile:1.7
# encoder, CPU variant: DeepEncoder on CPU with the CPU-only torch build (no CUDA libraries).
# Build from the repo root: docker build -f docker/encoder-cpu.Dockerfile -t ocrstream-encoder .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.15.0
# The CPU wheel index keeps ~3 GB of CUDA libraries out of the image.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ocrstream ./ocrstream
COPY services ./services
COPY kernels ./kernels
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && /opt/venv/bin/pip install ".[encoder,otlp]"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 ocrstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ocrstream --no-create-home ocrstream \
 && install -d -o 10001 -g 10001 /var/lib/ocrstream
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/ocrstream \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/var/lib/ocrstream/cache \
    TORCH_HOME=/var/lib/ocrstream/torch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OCRSTREAM_DEVICE=cpu
VOLUME ["/tmp", "/var/lib/ocrstream"]
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["python", "-m", "ocrstream.services.encoder.main"]
