#!/usr/bin/env bash
# Triton Inference Server on CPU: the tritonserver binary and python backend shipped in the
# nvidia-pytriton wheel of the project venv (pinned in pyproject.toml's `triton` extra), serving the
# repo's model_repo/ in explicit model-control mode. Set-up per /work/shared/reference/cpu-runtime-notes.md §1:
# a backend dir holding 3 symlinks, PATH starting with the venv's bin, LD_LIBRARY_PATH = the libpython dir.
# Env: OCRSTREAM_DEV_TRITON_MODELS (comma list, default '*' = every model in the repository),
#      OCRSTREAM_DEV_TRITON_MODEL_REPO (default <repo>/model_repo).
# Usage: triton.sh install|start|stop|restart|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PY="$VENV/bin/python"
MODEL_REPO="${OCRSTREAM_DEV_TRITON_MODEL_REPO:-$REPO/model_repo}"
MODELS="${OCRSTREAM_DEV_TRITON_MODELS:-*}"
HTTP_URL="http://$HOST:$OCRSTREAM_DEV_TRITON_HTTP_PORT"

# Facts about the venv's Python, read once: site-packages, X.Y, shared-lib dir or empty.
triton_pyinfo() {
    [[ -x "$PY" ]] || die "triton: no venv at $VENV; run bash scripts/bootstrap.sh first"
    "$PY" - <<'EOF'
import sysconfig, sys
shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
print(sysconfig.get_paths()["purelib"])
print(f"{sys.version_info.major}.{sys.version_info.minor}")
print(sysconfig.get_config_var("LIBDIR") if shared else "")
EOF
}

triton_setup_env() {
    local info
    info="$(triton_pyinfo)"
    SITE="$(sed -n 1p <<<"$info")"
    PYVER="$(sed -n 2p <<<"$info")"
    PYLIBDIR="$(sed -n 3p <<<"$info")"
    TRITON_HOME="$SITE/pytriton/tritonserver"
    TRITONSERVER="$TRITON_HOME/bin/tritonserver"
}

triton_install() {
    triton_setup_env
    [[ -x "$TRITONSERVER" ]] || die "triton: $TRITONSERVER not found; the venv lacks nvidia-pytriton" \
        "(run bash scripts/bootstrap.sh, which installs the project's [dev] extra)"
    local stub="$TRITON_HOME/python_backend_stubs/$PYVER/triton_python_backend_stub"
    [[ -x "$stub" ]] || die "triton: no python backend stub for Python $PYVER at $stub"
    # The stub links libpython$PYVER.so.1.0. A Python built without a shared lib gets Debian's.
    if [[ -z "$PYLIBDIR" && ! -e "/usr/lib/x86_64-linux-gnu/libpython$PYVER.so.1.0" ]]; then
        apt_install "libpython$PYVER"
    fi
    # python backend dir: the stub must sit beside libtriton_python.so (symlinks keep the stub's RPATH).
    local bdir
    bdir="$(service_dir triton)/backends/python"
    mkdir -p "$bdir"
    ln -sfn "$TRITON_HOME/backends/python/libtriton_python.so" "$bdir/libtriton_python.so"
    ln -sfn "$TRITON_HOME/backends/python/triton_python_backend_utils.py" "$bdir/triton_python_backend_utils.py"
    ln -sfn "$stub" "$bdir/triton_python_backend_stub"
}

triton_start() {
    triton_setup_env
    require_free_port "$OCRSTREAM_DEV_TRITON_HTTP_PORT" "triton http"
    require_free_port "$OCRSTREAM_DEV_TRITON_GRPC_PORT" "triton grpc"
    require_free_port "$OCRSTREAM_DEV_TRITON_METRICS_PORT" "triton metrics"
    [[ -d "$MODEL_REPO" ]] || die "triton: model repository $MODEL_REPO does not exist"
    local load=()
    if [[ "$MODELS" == "*" ]]; then
        load=(--load-model='*')
    else
        local m
        IFS=',' read -ra _models <<<"$MODELS"
        for m in "${_models[@]}"; do
            [[ -d "$MODEL_REPO/$m" ]] || die "triton: model '$m' (OCRSTREAM_DEV_TRITON_MODELS) not in $MODEL_REPO"
            load+=(--load-model="$m")
        done
    fi
    local libpath="${PYLIBDIR:-/usr/lib/x86_64-linux-gnu}"
    # exit-on-error=false: one broken model must not take the server (and every other model) down;
    # its state and reason are reported after start. strict-readiness=false for the same reason.
    spawn triton "PATH=$VENV/bin:$PATH" "LD_LIBRARY_PATH=$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}" -- \
        "$TRITONSERVER" --model-repository="$MODEL_REPO" \
        --backend-directory="$(service_dir triton)/backends" \
        --http-address="$HOST" --grpc-address="$HOST" --metrics-address="$HOST" \
        --http-port="$OCRSTREAM_DEV_TRITON_HTTP_PORT" --grpc-port="$OCRSTREAM_DEV_TRITON_GRPC_PORT" \
        --metrics-port="$OCRSTREAM_DEV_TRITON_METRICS_PORT" \
        --model-control-mode=explicit "${load[@]}" \
        --exit-on-error=false --strict-readiness=false --exit-timeout-secs=10 --log-verbose=0
}

triton_ready() { curl -sf -o /dev/null --max-time 2 "$HTTP_URL/v2/health/ready"; }
triton_timeout() { echo "${OCRSTREAM_DEV_TRITON_TIMEOUT:-600}"; }
triton_stop_timeout() { echo 30; }
triton_describe() {
    echo "http $HOST:$OCRSTREAM_DEV_TRITON_HTTP_PORT grpc $HOST:$OCRSTREAM_DEV_TRITON_GRPC_PORT metrics $HOST:$OCRSTREAM_DEV_TRITON_METRICS_PORT"
}

# After start: list each model's state; a model named in OCRSTREAM_DEV_TRITON_MODELS must be READY.
triton_report_models() {
    local index
    index="$(curl -sf --max-time 10 -X POST "$HTTP_URL/v2/repository/index" -d '{}')" ||
        die "triton: repository index request failed"
    "$PY" - "$MODELS" "$index" <<'EOF'
import json, sys
wanted, index = sys.argv[1], json.loads(sys.argv[2])
bad = []
for m in index:
    # First line only: python-backend reasons carry a whole traceback (the log has it).
    state, reason = m.get("state", "?"), (m.get("reason", "").strip().splitlines() or [""])[0][:300]
    print(f"[infra] triton model {m['name']}: {state}{' - ' + reason if reason else ''}", file=sys.stderr)
    if state != "READY" and (wanted == "*" and state == "UNAVAILABLE" or m["name"] in wanted.split(",")):
        bad.append(m["name"])
if bad and wanted != "*":
    sys.exit(f"[infra] ERROR: triton models not ready: {', '.join(bad)} (see the log)")
if bad:
    print(f"[infra] WARNING: triton models that failed to load: {', '.join(bad)}", file=sys.stderr)
EOF
}

if [[ "${1:-}" == start ]]; then
    service_main triton start
    triton_report_models || {
        log_tail "$(log_file triton)"
        exit 1
    }
else
    service_main triton "$@"
fi
