#!/usr/bin/env bash
# System (Debian) packages the repo's commands need, by group. Idempotent and fast when they are
# there: `dpkg -s` per package, apt-get only for the missing ones. Installing needs root or sudo.
#   fonts      the synthetic page generator's and the sample PDFs' faces: PACKAGES in
#              ocrstream/data/fonts.py (read from there, so there is one list)
#   tesseract  tesseract-ocr, tesseract-ocr-eng (the bench/test comparison with Tesseract)
#   chromium   chromium (the web console's headless-browser test)
# Usage: scripts/install_system.sh [--check | --list] GROUP...   (GROUP: fonts tesseract chromium all)
#   --check  exit 1 naming the missing packages, install nothing
#   --list   print the groups' packages, one a line
# Called by scripts/test.sh (all groups), scripts/quickstart.sh and scripts/train_embedded.sh (fonts).
# Env: OCRSTREAM_SKIP_SYSTEM_PACKAGES=1 skips it all (a machine whose packages are managed otherwise).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[install_system] %s\n' "$*" >&2; }

fonts_packages() {
    # The quoted names inside `PACKAGES = [ ... ]` of fonts.py.
    sed -n '/^PACKAGES = \[/,/^\]/p' "$REPO/ocrstream/data/fonts.py" | grep -o '"[^"]*"' | tr -d '"'
}

group_packages() {
    case "$1" in
        fonts) fonts_packages ;;
        tesseract) printf '%s\n' tesseract-ocr tesseract-ocr-eng ;;
        chromium) printf '%s\n' chromium ;;
        *)
            log "unknown group '$1' (groups: fonts tesseract chromium all)"
            return 2
            ;;
    esac
}

mode=install
groups=()
for arg in "$@"; do
    case "$arg" in
        --check) mode=check ;;
        --list) mode=list ;;
        all) groups+=(fonts tesseract chromium) ;;
        -h | --help)
            sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) groups+=("$arg") ;;
    esac
done
if ((${#groups[@]} == 0)); then
    log "no group given (groups: fonts tesseract chromium all)"
    exit 2
fi

pkgs=()
for g in "${groups[@]}"; do
    list="$(group_packages "$g")" || exit 2
    [[ -n "$list" ]] || { log "group $g lists no packages (is ocrstream/data/fonts.py complete?)"; exit 1; }
    while IFS= read -r p; do pkgs+=("$p"); done <<<"$list"
done

if [[ "$mode" == list ]]; then
    printf '%s\n' "${pkgs[@]}"
    exit 0
fi
if [[ "${OCRSTREAM_SKIP_SYSTEM_PACKAGES:-0}" == 1 ]]; then
    log "OCRSTREAM_SKIP_SYSTEM_PACKAGES=1: not checking ${groups[*]}"
    exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    log "${groups[*]}: all ${#pkgs[@]} packages installed"
    exit 0
fi
if [[ "$mode" == check ]]; then
    log "missing packages: ${missing[*]} (install: bash scripts/install_system.sh ${groups[*]})"
    exit 1
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "ERROR: ${missing[*]} missing and not root, no sudo: run as root: apt-get install ${missing[*]}"
        exit 1
    fi
fi
command -v apt-get >/dev/null 2>&1 || {
    log "ERROR: no apt-get (not Debian/Ubuntu?); install by hand: ${missing[*]}"
    exit 1
}
log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q >&2
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
still=()
for p in "${missing[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || still+=("$p")
done
if ((${#still[@]})); then
    log "ERROR: still missing after apt-get: ${still[*]}"
    exit 1
fi
log "installed: ${missing[*]}"
