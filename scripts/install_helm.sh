#!/usr/bin/env bash
# Install the pinned Helm used by the chart tests and by deployments. Idempotent and cached.
#
#   scripts/install_helm.sh           Helm SDK for the tests: PyPI helm-python-sdk (Helm Go SDK v4.2.3
#                                     as a shared library; renders and lints offline, no cluster).
#   scripts/install_helm.sh --cli     also the helm v3 CLI, built from its Go module source with the
#                                     Go toolchain, cached under ~/.cache/ocrstream/tools/ (for skaffold
#                                     and `helm install`); prints the binary's path.
#
# Why the SDK route for tests: measured on this project's 2-core machine, a cold `pip install
# helm-python-sdk==0.2.2` took 3 s, a cold `go install helm.sh/helm/v3/cmd/helm@v3.22.0` 5 min 34 s
# (413 MB of modules, 719 MB of build cache). Both are pinned; the SDK's bundled Helm version is
# checked below so a different wheel cannot slip in.
# Env: PYTHON (default: the repo's .venv python, else python3), GO (default: go on PATH or
# /usr/local/go/bin/go), OCRSTREAM_TOOLS (default: ~/.cache/ocrstream/tools).
set -euo pipefail

HELM_SDK_PKG="helm-python-sdk==0.2.2"
HELM_SDK_GO_VERSION="v4.2.3"
HELM_CLI_VERSION="v3.22.0"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${OCRSTREAM_TOOLS:-$HOME/.cache/ocrstream/tools}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi

sdk_version() {
  "$PYTHON" -c 'import helm_python as h; print(h.helm_sdk_version())' 2>/dev/null || true
}

install_sdk() {
  local have
  have="$(sdk_version)"
  if [[ "$have" != "$HELM_SDK_GO_VERSION" ]]; then
    echo "install_helm: installing $HELM_SDK_PKG into $PYTHON" >&2
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$HELM_SDK_PKG"
    have="$(sdk_version)"
  fi
  if [[ "$have" != "$HELM_SDK_GO_VERSION" ]]; then
    echo "install_helm: helm_python reports Helm SDK '$have', expected $HELM_SDK_GO_VERSION" >&2
    exit 1
  fi
  echo "install_helm: helm SDK $have ready ($HELM_SDK_PKG)" >&2
}

install_cli() {
  local dest="$tools/helm-$HELM_CLI_VERSION"
  local bin="$dest/helm"
  if [[ -x "$bin" ]] && "$bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_CLI_VERSION"; then
    echo "$bin"
    return
  fi
  local go="${GO:-}"
  if [[ -z "$go" ]]; then
    if command -v go >/dev/null; then go="$(command -v go)"; elif [[ -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; else
      echo "install_helm: --cli needs a Go toolchain (set GO=/path/to/go)" >&2; exit 1
    fi
  fi
  mkdir -p "$dest"
  echo "install_helm: building helm $HELM_CLI_VERSION from source with $("$go" version) (minutes when cold)" >&2
  local start=$SECONDS
  # The version variable is set at link time, as Helm's own Makefile does.
  GOBIN="$dest" CGO_ENABLED=0 nice -n 10 "$go" install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_CLI_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_CLI_VERSION"
  echo "install_helm: built in $((SECONDS - start)) s" >&2
  mkdir -p "$tools/bin"
  ln -sf "$bin" "$tools/bin/helm"
  echo "$bin"
}

install_sdk
if [[ "${1:-}" == "--cli" ]]; then
  install_cli
fi
