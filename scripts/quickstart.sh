#!/usr/bin/env bash
# The README main command: set up .venv (scripts/bootstrap.sh), then OCR the bundled sample PDFs
# through the embedded one-process pipeline (in-memory bus, local store, in-process cache) with
# the shipped model. Results: out/quickstart/<name>.md (one "<!-- page N -->" section per page)
# and <name>.json (per-page text, boxes, mode, token counts, timings, method).
# Usage: scripts/quickstart.sh [extra `ocrstream pipeline run` options, e.g. --mode small]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh
bash scripts/install_system.sh fonts  # the faces of ocrstream/data/fonts.py (sample PDFs, training pages)

OUT="${OCRSTREAM_QUICKSTART_OUT:-out/quickstart}"
SAMPLES="ocrstream/assets/samples"
if ! compgen -G "$SAMPLES/*.pdf" >/dev/null; then
    echo "quickstart: no sample PDFs in $SAMPLES (they ship with the repository; is the checkout complete?)" >&2
    exit 1
fi
# markdown: headings and paragraphs from the page layout (a later --prompt in "$@" wins)
.venv/bin/ocrstream pipeline run "$SAMPLES" --out "$OUT" --prompt markdown "$@"
echo "quickstart: results in $OUT/ (open $OUT/*.md)"
