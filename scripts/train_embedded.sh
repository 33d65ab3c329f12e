#!/usr/bin/env bash
# Train the embedded model in the background (resumes ~/.cache/ocrstream/train/$RUN if present).
# Usage: scripts/train_embedded.sh [RUN] [extra `ocrstream train` args...]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-lines}"; shift || true
PY="${PYTHON:-.venv/bin/python}"
DIR="${OCRSTREAM_TRAIN_DIR:-$HOME/.cache/ocrstream/train}/$RUN"
bash scripts/install_system.sh fonts  # training renders its pages in these faces
mkdir -p "$DIR"
nohup "$PY" -m ocrstream train --run "$RUN" "$@" >>"$DIR/train.log" 2>&1 &
echo $! >"$DIR/train.pid"
echo "training $RUN in the background: pid $(cat "$DIR/train.pid"), log $DIR/train.log"
