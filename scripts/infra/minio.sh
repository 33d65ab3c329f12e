#!/usr/bin/env bash
# The S3 object store ("minio" role: the project talks to it with the MinIO SDK) on
# $OCRSTREAM_DEV_HOST:$OCRSTREAM_DEV_MINIO_PORT, credentials $OCRSTREAM_DEV_MINIO_ACCESS_KEY/_SECRET_KEY.
#
# The server is the Versity S3 Gateway (versitygw, Apache-2.0) over a local directory (its posix
# backend), not the MinIO server: MinIO's server is AGPL-3.0, which this project's package policy
# rules out; docs/development.md has the comparison that picked it. It is built from its Go module
# source through the Go module proxy at the pinned version and cached under $OCRSTREAM_CACHE/bin/.
# Set OCRSTREAM_DEV_MINIO_CONSOLE=1 for its web UI on $OCRSTREAM_DEV_MINIO_CONSOLE_PORT.
# Usage: minio.sh install|start|stop|restart|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VGW_MODULE="github.com/versity/versitygw"
VGW_VERSION="v1.8.0"
VGW="$OCRSTREAM_CACHE/bin/versitygw-$VGW_VERSION"

minio_go() {
    if command -v go >/dev/null; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

minio_install() {
    [[ -x "$VGW" ]] && return 0
    local go t0 blog tmp
    go="$(minio_go)" || die "minio: the Go toolchain (>= 1.25) is needed to build the S3 server" \
        "(versitygw $VGW_VERSION); install Go (e.g. to /usr/local/go) and retry"
    t0="$(now)"
    blog="$OCRSTREAM_CACHE/logs/versitygw-build.log"
    mkdir -p "$(dirname "$blog")" "$(dirname "$VGW")"
    tmp="$(mktemp -d "$OCRSTREAM_CACHE/bin/.build.XXXXXX")"
    log "minio: building versitygw $VGW_VERSION from the Go module proxy (log: $blog)"
    # Lean static build: no cgo, no debug info, reproducible paths.
    (cd "$tmp" && GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" install -trimpath -ldflags='-s -w' \
        "$VGW_MODULE/cmd/versitygw@$VGW_VERSION") >"$blog" 2>&1 || {
        rm -rf "$tmp"
        log_tail "$blog"
        die "minio: go install of versitygw $VGW_VERSION failed"
    }
    mv "$tmp/versitygw" "$VGW"
    rm -rf "$tmp"
    log "minio: built $VGW in $(elapsed "$t0")s ($(du -h "$VGW" | cut -f1))"
}

minio_start() {
    local dir
    dir="$(service_dir minio)"
    # Buckets are directories under buckets/; object metadata goes to a sidecar directory, so the
    # data filesystem needs no extended-attribute support.
    mkdir -p "$dir/buckets" "$dir/meta"
    require_free_port "$OCRSTREAM_DEV_MINIO_PORT" "minio (s3)"
    local ui=()
    if [[ "$OCRSTREAM_DEV_MINIO_CONSOLE" == 1 ]]; then
        require_free_port "$OCRSTREAM_DEV_MINIO_CONSOLE_PORT" "minio console"
        ui=(--webui "$HOST:$OCRSTREAM_DEV_MINIO_CONSOLE_PORT" --webui-no-tls)
    fi
    spawn minio "ROOT_ACCESS_KEY_ID=$OCRSTREAM_DEV_MINIO_ACCESS_KEY" \
        "ROOT_SECRET_ACCESS_KEY=$OCRSTREAM_DEV_MINIO_SECRET_KEY" -- \
        "$VGW" --port "$HOST:$OCRSTREAM_DEV_MINIO_PORT" --quiet "${ui[@]}" \
        posix --sidecar "$dir/meta" "$dir/buckets"
}

# Ready = the S3 API accepts a signed request from the dev credentials (list buckets -> 200).
minio_ready() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$OCRSTREAM_DEV_MINIO_ACCESS_KEY:$OCRSTREAM_DEV_MINIO_SECRET_KEY" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "http://$HOST:$OCRSTREAM_DEV_MINIO_PORT/")"
    [[ "$code" == 200 ]]
}
minio_timeout() { echo "${OCRSTREAM_DEV_MINIO_TIMEOUT:-60}"; }
minio_stop_timeout() { echo 20; }
minio_describe() { echo "s3 http://$HOST:$OCRSTREAM_DEV_MINIO_PORT (versitygw $VGW_VERSION)"; }

service_main minio "$@"
