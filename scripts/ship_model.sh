#!/usr/bin/env bash
# Ship a trained line reader as the embedded model and re-measure what depends on it, in order:
#   1. export RUN/best.pt -> ocrstream/assets/model (weights, config, eval.json, MODEL_CARD.md)
#   2. the compression curve beside it (auto mode and progressive forgetting read it)
#   3. the benches that depend on the model: auto mode, forgetting, beside Tesseract
# Bench reports go to reports/ship/ (ignored by git; copy the numbers into docs/ by hand).
# Usage: scripts/ship_model.sh [RUN] [--threads N]     (RUN default: lines)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="${1:-lines}"
THREADS="${OCRSTREAM_SHIP_THREADS:-2}"
PY="${PYTHON:-.venv/bin/python}"
DIR="${OCRSTREAM_TRAIN_DIR:-$HOME/.cache/ocrstream/train}/$RUN"
OUT=reports/ship
mkdir -p "$OUT"
[[ -f "$DIR/best.pt" ]] || { echo "ship_model: no $DIR/best.pt (train first: scripts/train_embedded.sh)" >&2; exit 1; }

export OMP_NUM_THREADS="$THREADS"
"$PY" -m ocrstream export "$DIR/best.pt" | tee "$OUT/export.json"
"$PY" -m ocrstream.compression.curve --threads "$THREADS" --samples "$OUT/curve_samples.json" | tee "$OUT/curve.log"
"$PY" bench/auto_mode.py --threads "$THREADS" --out "$OUT/auto_mode.json" | tee "$OUT/auto_mode.log"
"$PY" bench/forgetting.py --threads "$THREADS" --out "$OUT/forgetting.json" | tee "$OUT/forgetting.log"
bash scripts/install_system.sh tesseract
"$PY" bench/embedded_vs_tesseract.py --threads "$THREADS" --out "$OUT/tesseract.json" | tee "$OUT/tesseract.log"
echo "ship_model: shipped $DIR/best.pt; reports in $OUT/"
