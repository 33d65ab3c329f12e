#!/usr/bin/env bash
# GPU check for the Triton kernels (kernels/): the kernel tests on the GPU, the benchmarks against
# the PyTorch references, and a quick MoE block-size tuning. Results go under $OUT.
#
#   OUT=/some/dir bash bench/gpu_check.sh      (from anywhere; default OUT=<repo>/out/gpu_check)
#
# Installs nothing: it needs a python with torch (CUDA build) and triton, which a GPU machine with
# torch has. The repo is imported from this checkout through a symlink tree that reproduces the
# setuptools package-dir mapping (kernels/ -> ocrstream.kernels), so no editable install is needed.
# Budget: under 8 minutes; each stage has its own timeout and a later stage is skipped when the
# time is short, so partial results still come back. Exit code: 0 if the tests passed.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/out/gpu_check}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
BUDGET=${GPU_CHECK_BUDGET_S:-450}  # seconds of work after which optional stages are skipped

echo "== gpu_check $(date -u +%FT%TZ) repo=$REPO out=$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 || echo "(no nvidia-smi)"

# 1. A python with CUDA torch + triton: the repo venv when it works here, else the system ones.
PY=""
for cand in "$REPO/.venv/bin/python" python3 python; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys, torch, triton; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    PY="$cand"; break
  fi
done
if [ -z "$PY" ]; then
  echo "FAIL: no python with a CUDA torch and triton (tried .venv, python3, python)"
  for cand in python3 python; do command -v "$cand" >/dev/null && "$cand" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>&1; done
  exit 2
fi
"$PY" - <<'EOF' | tee "$OUT/versions.txt"
import sys, torch, triton
print("python", sys.version.split()[0], "| torch", torch.__version__, "| triton", triton.__version__,
      "| device", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability())
EOF

# 2. ocrstream.* from this checkout without installing: a symlink tree on PYTHONPATH (setuptools'
#    editable finders, if any, sit after the path finder and are not reached).
SHIM="$(mktemp -d)"
trap 'rm -rf "$SHIM"' EXIT
mkdir -p "$SHIM/ocrstream"
for entry in "$REPO"/ocrstream/*; do ln -s "$entry" "$SHIM/ocrstream/$(basename "$entry")"; done
ln -sfn "$REPO/kernels" "$SHIM/ocrstream/kernels"
ln -sfn "$REPO/services" "$SHIM/ocrstream/services"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET OCRSTREAM_KERNELS  # real GPU compilation, auto backend
# Python puts the working directory first on sys.path (`python -m`), and the repo root's ocrstream/
# lacks the kernels mapping: so Python runs from the shim directory, never from the repo root.
(cd "$SHIM" && "$PY" -c 'import ocrstream.kernels.dispatch as d, ocrstream.model as m; print("imports from", d.__file__, m.__file__)') ||
  { echo "FAIL: cannot import ocrstream.kernels / ocrstream.model from the shim"; exit 2; }

# 3. Kernel tests on the GPU (same files as the CPU interpreter run).
TEST_RC=0
if "$PY" -c 'import pytest' >/dev/null 2>&1; then
  echo "== tests ($(elapsed)s)"
  (cd "$SHIM" && timeout 240 "$PY" -m pytest "$REPO/tests/kernels" --rootdir "$REPO" -c "$REPO/pyproject.toml" \
      -q -o addopts=-ra -p no:cacheprovider --junitxml="$OUT/kernel-tests.xml" --durations=10)
  TEST_RC=$?
  echo "tests rc=$TEST_RC"
else
  echo "SKIP tests: pytest is not installed in $PY (this script installs nothing)"
  TEST_RC=3
fi

# 4. Benchmarks against the references, with measured copy/matmul ceilings.
if [ "$(elapsed)" -lt $((BUDGET - 120)) ]; then
  echo "== bench ($(elapsed)s)"
  (cd "$SHIM" && timeout 150 "$PY" "$REPO/bench/kernels.py" --quick --out "$OUT/bench")
  echo "bench rc=$?"
else
  echo "SKIP bench: $(elapsed)s used of the ${BUDGET}s budget"
fi

# 5. Quick MoE tuning for the official expert shape; the JSON lands in $OUT/bench/configs/.
if [ "$(elapsed)" -lt $((BUDGET - 60)) ]; then
  echo "== tune ($(elapsed)s)"
  (cd "$SHIM" && timeout $((BUDGET - $(elapsed))) "$PY" "$REPO/bench/kernels.py" --tune-only --quick --out "$OUT/bench")
  echo "tune rc=$?"
else
  echo "SKIP tune: $(elapsed)s used of the ${BUDGET}s budget"
fi

echo "== done in $(elapsed)s; tests rc=$TEST_RC; results in $OUT"
exit "$TEST_RC"
