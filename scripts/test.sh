#!/usr/bin/env bash
# The whole test suite against real services: bootstrap the venv, start the dev services, run pytest
# over tests/ (junit report in reports/junit.xml), stop the services this run started, exit with
# pytest's code. Extra arguments go to pytest: `bash scripts/test.sh -k smoke`.
# Env: OCRSTREAM_KEEP_SERVICES=1 leaves the services running afterwards;
#      OCRSTREAM_TEST_SERVICES_LIST="redis kafka" starts only those (default: all).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { printf '[test %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0="$(now)"

# Under CI each clone gets its own service data (git-ignored .cache/), never a developer's.
if [[ "${CI:-}" == true && -z "${OCRSTREAM_DEV_HOME:-}" ]]; then
    export OCRSTREAM_DEV_HOME="$REPO/.cache/ocrstream-dev"
fi

t="$(now)"
bash scripts/bootstrap.sh
log "step bootstrap: $(elapsed "$t")s"

# System packages the tests use: fonts (synthetic pages, held-out font), Tesseract (the comparison
# bench/test), Chromium (the web console's headless-browser test). Fast when already installed.
t="$(now)"
bash scripts/install_system.sh fonts tesseract chromium
log "step system packages: $(elapsed "$t")s"

read -ra SERVICES <<<"${OCRSTREAM_TEST_SERVICES_LIST:-redis kafka minio triton}"
# Services already running before this run are a developer's: leave them as they are.
ours=()
for s in "${SERVICES[@]}"; do
    bash scripts/infra/"$s".sh status >/dev/null 2>&1 || ours+=("$s")
done
cleanup() {
    local rc=$?
    if [[ "${OCRSTREAM_KEEP_SERVICES:-0}" != 1 && ${#ours[@]} -gt 0 ]]; then
        local t
        t="$(now)"
        bash scripts/infra/down.sh "${ours[@]}" || true
        log "step services down: $(elapsed "$t")s"
    fi
    log "total: $(elapsed "$T0")s, exit $rc"
}
trap cleanup EXIT

t="$(now)"
bash scripts/infra/up.sh "${SERVICES[@]}"
log "step services up: $(elapsed "$t")s"

mkdir -p reports
t="$(now)"
set +e
# --services=running: the fixtures use what up.sh started and never start or stop anything.
"${OCRSTREAM_VENV:-$REPO/.venv}/bin/python" -m pytest tests --services=running --junitxml=reports/junit.xml "$@"
rc=$?
set -e
log "step pytest: $(elapsed "$t")s (exit $rc)"
if ((rc == 5)); then
    log "ERROR: pytest collected no tests; that is a failure here"
    rc=1
fi
if ((rc != 0)); then
    bash scripts/infra/status.sh "${SERVICES[@]}" || true
fi
exit "$rc"
