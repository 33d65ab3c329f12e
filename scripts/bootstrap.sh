#!/usr/bin/env bash
# Creates the project venv at <repo>/.venv (Python >= 3.11) and installs the project editable with
# its [dev] extra. Idempotent: a stamp keyed by the packaging files and the Python version makes a
# second run a few seconds long. Works on a fresh machine; pip's cache stays in ~/.cache/pip.
# Env: OCRSTREAM_PYTHON (interpreter to build the venv from), OCRSTREAM_VENV (default <repo>/.venv),
#      OCRSTREAM_BOOTSTRAP_FORCE=1 (reinstall even when the stamp matches).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OCRSTREAM_VENV:-$REPO/.venv}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '[bootstrap %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_ALL="$(now)"

# An interpreter >= 3.11 that can make venvs.
find_python() {
    local c
    for c in "${OCRSTREAM_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [[ -n "$c" ]] || continue
        command -v "$c" >/dev/null || continue
        if "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

t="$(now)"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$(find_python)" || die "no Python >= 3.11 with venv/ensurepip found (set OCRSTREAM_PYTHON;" \
        "on Debian: apt-get install python3 python3-venv)"
    log "creating venv $VENV from $PY ($("$PY" -V 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    # ensurepip's bundled pip can be years old; a current resolver is much faster on this dependency set.
    "$VENV/bin/python" -m pip install -q --upgrade 'pip>=25' >&2 || die "could not upgrade pip in $VENV"
    log "step venv: created in $(elapsed "$t")s"
else
    log "step venv: $VENV exists ($("$VENV/bin/python" -V 2>&1)), $(elapsed "$t")s"
fi

# The stamp covers what decides the install: packaging files and the interpreter.
stamp_key() {
    cat "$REPO/pyproject.toml" "$REPO/setup.py" 2>/dev/null | sha256sum | cut -c1-16
    "$VENV/bin/python" -c 'import sys; print(sys.version)'
}
STAMP="$VENV/.ocrstream-bootstrap.stamp"
KEY="$(stamp_key)"

# The check that matters: the mapped namespaces import (setup.py lists them for the editable finder).
verify_imports() {
    (cd / && "$VENV/bin/python" -c 'import ocrstream, ocrstream.services, ocrstream.kernels') 2>&1
}

t="$(now)"
if [[ "${OCRSTREAM_BOOTSTRAP_FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]] && verify_imports >/dev/null; then
    log "step install: up to date (stamp matches pyproject.toml/setup.py), $(elapsed "$t")s"
else
    log "step install: pip install -e '.[dev]' (pip cache: $PIP_CACHE_DIR)"
    PIPLOG="$VENV/bootstrap-pip.log"
    # Build-backend warnings are noise on success; the log is shown when pip fails.
    if ! (cd "$REPO" && "$VENV/bin/python" -m pip install -q -e '.[dev]') >"$PIPLOG" 2>&1; then
        tail -n 60 "$PIPLOG" >&2
        die "pip install -e '.[dev]' failed (full log: $PIPLOG)"
    fi
    err="$(verify_imports)" || die "after the editable install, 'import ocrstream.services, ocrstream.kernels' fails: $err"
    printf '%s\n' "$KEY" >"$STAMP"
    log "step install: done in $(elapsed "$t")s"
fi

log "bootstrap done in $(elapsed "$T_ALL")s; activate with: source $VENV/bin/activate"
