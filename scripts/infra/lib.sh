# shellcheck shell=bash disable=SC2034  # its variables are used by the scripts that source it
# Shared helpers of the dev infrastructure scripts (sourced, never run).
#
# Layout: data and logs under $OCRSTREAM_DEV_HOME (default ~/.cache/ocrstream/dev/<service>/),
# downloads and builds under $OCRSTREAM_CACHE (default ~/.cache/ocrstream/), kept between runs.
# Each service runs as our own process in its own session (setsid), its pid in <service>/pid.

set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$INFRA_DIR/../.." && pwd)"
OCRSTREAM_CACHE="${OCRSTREAM_CACHE:-$HOME/.cache/ocrstream}"
OCRSTREAM_DEV_HOME="${OCRSTREAM_DEV_HOME:-$OCRSTREAM_CACHE/dev}"
VENV="${OCRSTREAM_VENV:-$REPO/.venv}"
export OCRSTREAM_CACHE OCRSTREAM_DEV_HOME

# Defaults from defaults.env, each one overridable by the environment.
while IFS='=' read -r _key _value; do
    [[ -z "$_key" || "$_key" == \#* ]] && continue
    if [[ -z "${!_key:-}" ]]; then
        printf -v "$_key" '%s' "$_value"
    fi
    export "${_key?}"
done <"$INFRA_DIR/defaults.env"
unset _key _value
HOST="$OCRSTREAM_DEV_HOST"

ALL_SERVICES=(redis kafka minio triton)

log() { printf '[infra %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# Seconds since the epoch with millis, for step timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

service_dir() { printf '%s/%s' "$OCRSTREAM_DEV_HOME" "$1"; }
pid_file() { printf '%s/%s/pid' "$OCRSTREAM_DEV_HOME" "$1"; }
log_file() { printf '%s/%s/%s.log' "$OCRSTREAM_DEV_HOME" "$1" "$1"; }

# The pid of our running process for a service, or nothing.
running_pid() {
    local pf
    pf="$(pid_file "$1")"
    [[ -f "$pf" ]] || return 1
    local pid
    pid="$(cat "$pf")"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        printf '%s' "$pid"
        return 0
    fi
    return 1
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Fail early when a port we need is held by a process that is not ours.
require_free_port() {
    local port="$1" what="$2"
    if port_open "$HOST" "$port"; then
        die "$what: port $HOST:$port is already in use by another process (not started by these scripts;" \
            "see 'ss -ltnp | grep :$port'). Stop it or choose another port with the env var in scripts/infra/defaults.env."
    fi
}

log_tail() {
    local lf="$1"
    if [[ -f "$lf" ]]; then
        log "last 40 lines of $lf:"
        tail -n 40 "$lf" | sed 's/^/    | /' >&2
    else
        log "(no log file at $lf)"
    fi
}

# Start a daemon in its own session with stdout/stderr in the service log; record its pid.
# Usage: spawn SERVICE [ENV=VALUE...] -- COMMAND ARGS...
spawn() {
    local svc="$1"
    shift
    local envs=()
    while [[ "$1" != "--" ]]; do
        envs+=("$1")
        shift
    done
    shift
    local lf
    lf="$(log_file "$svc")"
    mkdir -p "$(dirname "$lf")"
    printf '\n===== %s start %s =====\n' "$svc" "$(date -u +%FT%TZ)" >>"$lf"
    env "${envs[@]}" setsid "$@" >>"$lf" 2>&1 </dev/null &
    echo $! >"$(pid_file "$svc")"
}

# Wait until CHECK (a shell function name + args) succeeds, the process dies, or TIMEOUT seconds pass.
# Usage: wait_ready SERVICE TIMEOUT CHECK [ARGS...]
wait_ready() {
    local svc="$1" timeout="$2"
    shift 2
    local t0 pid
    t0="$(date +%s)"
    while true; do
        if "$@" 2>/dev/null; then
            return 0
        fi
        if ! pid="$(running_pid "$svc")"; then
            log_tail "$(log_file "$svc")"
            die "$svc exited during start-up (see the log tail above)"
        fi
        if (($(date +%s) - t0 >= timeout)); then
            log_tail "$(log_file "$svc")"
            die "$svc (pid $pid) not ready after ${timeout}s; it is left running for inspection" \
                "(stop it with: bash scripts/infra/down.sh $svc)"
        fi
        sleep 0.5
    done
}

# Stop our process for a service: SIGTERM to its session, SIGKILL after TIMEOUT seconds.
stop_service() {
    local svc="$1" timeout="${2:-30}" pid
    if ! pid="$(running_pid "$svc")"; then
        rm -f "$(pid_file "$svc")"
        log "$svc: not running"
        return 0
    fi
    local t0
    t0="$(now)"
    # setsid made the daemon a session (and group) leader: signal its whole group, children included.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= timeout * 10)); then
            log "$svc: still alive after ${timeout}s, sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$(pid_file "$svc")"
    log "$svc: stopped (pid $pid) in $(elapsed "$t0")s"
}

status_line() {
    local svc="$1" detail="$2" pid
    if pid="$(running_pid "$svc")"; then
        printf '%-7s running  pid %-8s %s\n' "$svc" "$pid" "$detail"
        return 0
    fi
    printf '%-7s stopped                %s\n' "$svc" "$detail"
    return 1
}

# apt-get install for the packages missing from the machine (we run as root here, sudo elsewhere).
apt_install() {
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    local t0 alog
    t0="$(now)"
    alog="$OCRSTREAM_CACHE/logs/apt-install.log"
    mkdir -p "$(dirname "$alog")"
    log "apt-get install $* (missing on this machine; output in $alog)"
    # Refresh the package lists only when apt has none or they are older than a day.
    if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$alog" 2>&1 ||
            { log_tail "$alog"; die "apt-get update failed"; }
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$alog" 2>&1 ||
        { log_tail "$alog"; die "apt-get install $* failed"; }
    log "apt-get install $* took $(elapsed "$t0")s"
}

# Serialise installs/builds of one service across concurrent callers.
with_lock() {
    local name="$1"
    shift
    mkdir -p "$OCRSTREAM_CACHE"
    (
        flock -w 3600 9 || die "timed out waiting for the $name install lock"
        "$@"
    ) 9>"$OCRSTREAM_CACHE/.$name.lock"
}

# Common entry point of the per-service scripts: dispatch install|start|stop|status|restart.
service_main() {
    local svc="$1"
    shift
    local cmd="${1:-status}"
    case "$cmd" in
    install) with_lock "$svc" "${svc}_install" ;;
    start)
        if pid="$(running_pid "$svc")"; then
            if "${svc}_ready" 2>/dev/null; then
                log "$svc: already running (pid $pid)"
                return 0
            fi
            log "$svc: pid $pid alive but not answering; waiting for it"
            wait_ready "$svc" "$("${svc}_timeout")" "${svc}_ready"
            return 0
        fi
        local t0
        t0="$(now)"
        with_lock "$svc" "${svc}_install"
        local t1
        t1="$(now)"
        mkdir -p "$(service_dir "$svc")"
        "${svc}_start"
        wait_ready "$svc" "$("${svc}_timeout")" "${svc}_ready"
        log "$svc: ready (pid $(running_pid "$svc")) - install/check $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s, start $(elapsed "$t1")s; log: $(log_file "$svc")"
        ;;
    stop) stop_service "$svc" "$("${svc}_stop_timeout" 2>/dev/null || echo 30)" ;;
    restart)
        stop_service "$svc" "$("${svc}_stop_timeout" 2>/dev/null || echo 30)"
        service_main "$svc" start
        ;;
    status) status_line "$svc" "$("${svc}_describe")" ;;
    *) die "usage: $0 install|start|stop|restart|status" ;;
    esac
}
