#!/usr/bin/env bash
# One line per dev service: running or stopped, pid, endpoint. Exit 0 only when all asked are running.
# Usage: status.sh [service...]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

services=("$@")
((${#services[@]})) || services=("${ALL_SERVICES[@]}")
rc=0
for s in "${services[@]}"; do
    bash "$INFRA_DIR/$s.sh" status || rc=1
done
echo "data and logs: $OCRSTREAM_DEV_HOME"
exit "$rc"
