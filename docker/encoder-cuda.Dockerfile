# syntax=docker/dockerfile:1.7
# encoder, CUDA variant: the PyPI torch build (CUDA libraries as wheels) on NVIDIA's CUDA runtime base.
# Build from the repo root: docker build -f docker/encoder-cuda.Dockerfile -t ocrstream-encoder-cuda .
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_VERSION=2.15.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ocrstream ./ocrstream
COPY services ./services
COPY kernels ./kernels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install "torch==${TORCH_VERSION}" \
 && /opt/venv/bin/pip install ".[encoder,kernels,otlp]"

FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# The venv's interpreter is a link to this python3; the rest of the toolchain stays in the build stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ocrstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ocrstream --no-create-home ocrstream \
 && install -d -o 10001 -g 10001 /var/lib/ocrstream
COPY --from=build /opt/venv /opt/venv
# TRITON_CACHE_DIR: compiled Triton-language kernels go to the writable volume, not the read-only root.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/var/lib/ocrstream \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/var/lib/ocrstream/cache \
    TORCH_HOME=/var/lib/ocrstream/torch \
    TRITON_CACHE_DIR=/var/lib/ocrstream/triton \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OCRSTREAM_DEVICE=cuda
VOLUME ["/tmp", "/var/lib/ocrstream"]
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["python", "-m", "ocrstream.services.encoder.main"]
