# syntax=docker/dockerfile:1.7
# decoder: NVIDIA Triton Inference Server (Python backend) serving model_repo/ (decoder + expert
# shards), with ocrstream installed into Triton's own python3 so model.py can import it. The same
# image runs the Kafka consumer sidecar (`python3 -m ocrstream.services.decoder.main`).
# Build from the repo root: docker build -f docker/decoder.Dockerfile -t ocrstream-decoder .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

FROM ${TRITON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY ocrstream ./ocrstream
COPY services ./services
COPY kernels ./kernels
# Wheels for ocrstream and every dependency; the runtime stage installs them offline.
RUN python3 -m pip wheel --wheel-dir /wheels ".[decoder,kernels,otlp,cluster]"

FROM ${TRITON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Triton's python backend stub embeds the system interpreter, so install into it (PEP 668 override);
# the wheels are bind-mounted, never copied into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m pip install --break-system-packages --no-index --find-links /wheels "ocrstream[decoder,kernels,otlp,cluster]" \
 && groupadd --system --gid 10001 ocrstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ocrstream --no-create-home ocrstream \
 && install -d -o 10001 -g 10001 /var/lib/ocrstream
COPY --chown=0:0 model_repo /opt/ocrstream/model_repo
ENV HOME=/var/lib/ocrstream \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/var/lib/ocrstream/cache \
    TORCH_HOME=/var/lib/ocrstream/torch \
    TRITON_CACHE_DIR=/var/lib/ocrstream/triton \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OCRSTREAM_DEVICE=cuda
VOLUME ["/tmp", "/var/lib/ocrstream", "/dev/shm"]
USER 10001:10001
EXPOSE 8000 8001 8002 9100
CMD ["tritonserver", "--model-repository=/opt/ocrstream/model_repo"]
