#!/usr/bin/env bash
# The wheels gpu_call.sh needs on the lent GPU machine, beyond what it has (torch, timm, lightning,
# torchmetrics, matplotlib, rich and their requirements; ../reference/gpu/README.md of the workplace):
# pure-Python wheels, pinned, into .whl/ at the repository root (ignored by git), carried with the call:
#
#   bash benchmarks/gpu_wheels.sh
#   run(command="bash benchmarks/gpu_call.sh", carry=[".whl"], timeout_s=540)
#
# The machine has no network: gpu_call.sh installs these with --no-index --no-deps.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
WHEELS=${WHEELS:-$ROOT/.whl}
PINNED=(
    hydra-core==1.3.8 omegaconf==2.3.1  # the configs
    pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0  # the CUDA tests (not pytest-xdist: gpu_call.sh runs without it)
    wids==0.1.11 braceexpand==0.1.7  # data.format=shards, imported where shards are read
)
BUILT=(antlr4-python3-runtime==4.9.3)  # hydra's parser: published as a source archive only
rm -rf "$WHEELS"
mkdir -p "$WHEELS"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --dest "$WHEELS" \
    "${PINNED[@]}"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WHEELS" "${BUILT[@]}"
for wheel in "$WHEELS"/*.whl; do
    case $wheel in
    *-none-any.whl) ;;
    *) echo "not a pure-Python wheel: $wheel" >&2 && exit 1 ;;
    esac
done
ls "$WHEELS"
