#!/usr/bin/env bash
# Print `export` lines pointing the ocrstream services (ocrstream/config.py) at the dev infrastructure:
#   eval "$(bash scripts/infra/env.sh)"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cat <<EOF2
export OCRSTREAM_KAFKA_BOOTSTRAP=$HOST:$OCRSTREAM_DEV_KAFKA_PORT
export OCRSTREAM_REDIS_URL=redis://$HOST:$OCRSTREAM_DEV_REDIS_PORT/0
export OCRSTREAM_S3_ENDPOINT=$HOST:$OCRSTREAM_DEV_MINIO_PORT
export OCRSTREAM_S3_ACCESS_KEY=$OCRSTREAM_DEV_MINIO_ACCESS_KEY
export OCRSTREAM_S3_SECRET_KEY=$OCRSTREAM_DEV_MINIO_SECRET_KEY
export OCRSTREAM_S3_SECURE=false
export OCRSTREAM_DECODER_TRITON_URL=$HOST:$OCRSTREAM_DEV_TRITON_GRPC_PORT
EOF2
