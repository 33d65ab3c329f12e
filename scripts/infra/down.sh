#!/usr/bin/env bash
# Stop dev services (default: all), in reverse start order. Data stays in $OCRSTREAM_DEV_HOME;
# `down.sh --purge [service...]` also deletes it.
# Usage: down.sh [--purge] [service...]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
if [[ "${1:-}" == --purge ]]; then
    purge=1
    shift
fi
services=("$@")
((${#services[@]})) || services=("${ALL_SERVICES[@]}")
for ((i = ${#services[@]} - 1; i >= 0; i--)); do
    s="${services[$i]}"
    [[ -f "$INFRA_DIR/$s.sh" ]] || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
    bash "$INFRA_DIR/$s.sh" stop
    if ((purge)); then
        rm -rf "$(service_dir "$s")"
        log "$s: data removed"
    fi
done
