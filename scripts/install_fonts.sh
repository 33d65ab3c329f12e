#!/usr/bin/env bash
# Fonts used by the synthetic page generator (ocrstream/data/fonts.py) and the sample PDFs: the
# `fonts` group of scripts/install_system.sh (idempotent; needs root or sudo to install).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/install_system.sh" fonts "$@"
