#!/usr/bin/env bash
# The S3 object store ("minio" role: the project talks to it with the MinIO SDK) on
# $OCRSTREAM_DEV_HOST:$OCRSTREAM_DEV_MINIO_PORT, credentials $OCRSTREAM_DEV_MINIO_ACCESS_KEY/_SECRET_KEY.
#
# The server is SeaweedFS (Apache-2.0) in its all-in-one `weed mini` mode, not the MinIO server:
# MinIO's server is AGPL-3.0, which this project's package policy rules out (docs/development.md).
# It is built from its Go module source through the Go module proxy at the version pinned in
# scripts/infra/seaweedfs/go.mod (a `tool` line plus upstream's replace directive, which
# `go install pkg@version` would refuse), and the binary is cached under $OCRSTREAM_CACHE/bin/.
# Usage: minio.sh install|start|stop|restart|status
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SWFS_MOD="$INFRA_DIR/seaweedfs"
SWFS_VERSION="$(sed -n 's:^\s*github.com/seaweedfs/seaweedfs \(v[^ ]*\).*:\1:p' "$SWFS_MOD/go.mod" | head -n1)"
# Keyed by the go.mod/go.sum hash so a version bump rebuilds.
WEED="$OCRSTREAM_CACHE/bin/weed-$(cat "$SWFS_MOD/go.mod" "$SWFS_MOD/go.sum" | sha256sum | cut -c1-12)"
# Internal SeaweedFS ports (master, volume, filer, admin) from one base; gRPC ports are +10000.
BASE="${OCRSTREAM_DEV_MINIO_INTERNAL_PORT_BASE:-19010}"

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
    [[ -x "$WEED" ]] && return 0
    local go t0 blog
    go="$(minio_go)" || die "minio: the Go toolchain is needed to build the S3 server (SeaweedFS $SWFS_VERSION);" \
        "install Go >= 1.26 (e.g. /usr/local/go) and retry"
    t0="$(now)"
    blog="$OCRSTREAM_CACHE/logs/seaweedfs-build.log"
    mkdir -p "$(dirname "$blog")" "$(dirname "$WEED")"
    log "minio: building SeaweedFS $SWFS_VERSION (weed) from the Go module proxy; first time takes minutes (log: $blog)"
    # Lean static build: no cgo, no debug info, no VCS stamping; -mod=mod lets go.sum be the lock.
    (cd "$SWFS_MOD" && CGO_ENABLED=0 GOFLAGS=-mod=mod "$go" build -trimpath -ldflags='-s -w' \
        -o "$WEED.tmp" github.com/seaweedfs/seaweedfs/weed) >"$blog" 2>&1 || {
        log_tail "$blog"
        die "minio: go build of SeaweedFS failed"
    }
    mv "$WEED.tmp" "$WEED"
    log "minio: built $WEED in $(elapsed "$t0")s ($(du -h "$WEED" | cut -f1))"
}

minio_start() {
    local dir
    dir="$(service_dir minio)"
    mkdir -p "$dir/data"
    require_free_port "$OCRSTREAM_DEV_MINIO_PORT" "minio (s3)"
    local p
    for p in $((BASE)) $((BASE + 1)) $((BASE + 2)) $((BASE + 3)); do
        require_free_port "$p" "minio internal (OCRSTREAM_DEV_MINIO_INTERNAL_PORT_BASE)"
    done
    # AWS_* make `weed mini` create the one admin identity; telemetry off (and no network anyway);
    # the extra front ends (WebDAV, Iceberg, Lance, admin UI) are off: only S3 is used.
    spawn minio "AWS_ACCESS_KEY_ID=$OCRSTREAM_DEV_MINIO_ACCESS_KEY" \
        "AWS_SECRET_ACCESS_KEY=$OCRSTREAM_DEV_MINIO_SECRET_KEY" -- \
        "$WEED" mini -dir="$dir/data" -ip="$HOST" -ip.bind="$HOST" \
        -s3.port="$OCRSTREAM_DEV_MINIO_PORT" -s3.port.grpc=$((OCRSTREAM_DEV_MINIO_PORT + 10000)) \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.port=$((BASE)) -master.port.grpc=$((BASE + 10000)) \
        -volume.port=$((BASE + 1)) -volume.port.grpc=$((BASE + 10001)) \
        -filer.port=$((BASE + 2)) -filer.port.grpc=$((BASE + 10002)) \
        -admin.port=$((BASE + 3)) -admin.port.grpc=$((BASE + 10003)) -admin.port.legacy=0 \
        -webdav=false -admin.ui=false -master.telemetry=false \
        -master.volumeSizeLimitMB=64 -volume.max=0
}

# Ready = the S3 API answers a signed request: list buckets with the dev credentials.
minio_ready() {
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$OCRSTREAM_DEV_MINIO_ACCESS_KEY:$OCRSTREAM_DEV_MINIO_SECRET_KEY" \
        "http://$HOST:$OCRSTREAM_DEV_MINIO_PORT/")"
    [[ "$code" == 200 ]]
}
minio_timeout() { echo "${OCRSTREAM_DEV_MINIO_TIMEOUT:-120}"; }
minio_stop_timeout() { echo 20; }
minio_describe() { echo "s3 http://$HOST:$OCRSTREAM_DEV_MINIO_PORT (SeaweedFS $SWFS_VERSION)"; }

service_main minio "$@"
