#!/usr/bin/env bash
# Start dev services (default: all of redis kafka minio triton), each on 127.0.0.1; idempotent.
# Installs/builds run first, in parallel (network and CPU bound steps overlap), then the services
# start one by one, each waited for until it answers. Prints the time of every step.
# Usage: up.sh [service...]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

services=("$@")
((${#services[@]})) || services=("${ALL_SERVICES[@]}")
for s in "${services[@]}"; do
    [[ -f "$INFRA_DIR/$s.sh" ]] || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
done

T0="$(now)"
mkdir -p "$OCRSTREAM_CACHE/logs"
declare -A pids starts
for s in "${services[@]}"; do
    if running_pid "$s" >/dev/null; then
        continue
    fi
    starts[$s]="$(now)"
    bash "$INFRA_DIR/$s.sh" install >"$OCRSTREAM_CACHE/logs/install-$s.log" 2>&1 &
    pids[$s]=$!
done
failed=0
for s in "${!pids[@]}"; do
    if wait "${pids[$s]}"; then
        log "install $s: ok in $(elapsed "${starts[$s]}")s"
    else
        log_tail "$OCRSTREAM_CACHE/logs/install-$s.log"
        log "install $s: FAILED after $(elapsed "${starts[$s]}")s"
        failed=1
    fi
done
((failed == 0)) || die "installs failed (see above)"

for s in "${services[@]}"; do
    t="$(now)"
    bash "$INFRA_DIR/$s.sh" start
    log "start $s: $(elapsed "$t")s"
done
log "up: ${services[*]} in $(elapsed "$T0")s"
