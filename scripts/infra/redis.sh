#!/usr/bin/env bash
# Redis for the vision-token cache: Debian's redis-server run as our own process (not the system
# service) on $OCRSTREAM_DEV_HOST:$OCRSTREAM_DEV_REDIS_PORT, no persistence.
# Usage: redis.sh install|start|stop|restart|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

redis_install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return 0
    fi
    apt_install redis-server
    # The Debian package starts the system service on :6379; we do not use it, and it must not
    # hold memory or ports, so stop it when a service manager is present.
    if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
        systemctl stop redis-server || true
    fi
}

redis_start() {
    local dir
    dir="$(service_dir redis)"
    require_free_port "$OCRSTREAM_DEV_REDIS_PORT" redis
    # Config on the command line: no file to drift; no RDB/AOF since the cache is disposable.
    spawn redis -- redis-server --bind "$HOST" --port "$OCRSTREAM_DEV_REDIS_PORT" \
        --protected-mode yes --daemonize no --save '' --appendonly no --dir "$dir" \
        --maxmemory 512mb --maxmemory-policy allkeys-lru --loglevel notice
}

redis_ready() { [[ "$(redis-cli -h "$HOST" -p "$OCRSTREAM_DEV_REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
redis_timeout() { echo "${OCRSTREAM_DEV_REDIS_TIMEOUT:-30}"; }
redis_stop_timeout() { echo 10; }
redis_describe() { echo "redis://$HOST:$OCRSTREAM_DEV_REDIS_PORT/0"; }

service_main redis "$@"
