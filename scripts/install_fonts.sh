#!/usr/bin/env bash
# Fonts used by the synthetic page generator (ocrstream/data/fonts.py) and the sample PDFs.
# Idempotent; needs root (or sudo) and the Debian archive.
set -euo pipefail
PKGS=(fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-noto-core)
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "fonts already installed: ${PKGS[*]}"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
