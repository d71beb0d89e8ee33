#!/usr/bin/env bash
# The one call on a lent GPU machine: the CUDA tests, the graph mode against eager (graph_vs_eager.py),
# then gpu_bench.sh (the graph mode, the input pipeline and a run fed from JPEGs on the device, ...),
# within about 8.5 minutes.
# With the `device` tool, from the repository root, the wheels carried (see below):
#
#   run(command="bash benchmarks/gpu_call.sh", carry=[".whl"], timeout_s=540)
#
# $OUT gets call.log (everything printed), summary.md (gpu_bench.sh's tables, failures first) and
# gpu_results.tar.gz (every table and JSON, the real run's log): three files, under the tool's eight.
# The wheels of what the GPU machine lacks, made here once (.whl is ignored: add /.whl/ to .git/info/exclude):
#   pip download --no-deps -d .whl hydra-core==1.3.8 omegaconf==2.3.1
#   pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
RESULTS=${RESULTS:-/tmp/gpu_results}
exec > >(tee "$OUT/call.log") 2>&1
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:src
if [ -d .whl ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
        exit
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PYTHON" -c "import torch, timm, lightning; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__)"

echo "== CUDA tests, slow ones included (the graph mode, the device pipeline, the data wait in a graph-mode run)"
timeout -k 10 "${TEST_TIMEOUT:-150}" "$PYTHON" -m pytest -q -p no:cacheprovider -n 0 tests/test_cuda_graphs.py \
    tests/test_device_augment.py "tests/test_train.py::test_a_run_that_waits_for_its_data_logs_the_share_per_epoch_and_says_what_to_try"
tests=$?
echo "CUDA tests: exit code $tests"

echo "== The graph mode against eager: one seed, validations inside the fit, scores side by side"
mkdir -p "$RESULTS"
timeout -k 10 "${COMPARE_TIMEOUT:-100}" "$PYTHON" benchmarks/graph_vs_eager.py --out "$RESULTS/graph_vs_eager"
compared=$?
echo "graph vs eager: exit code $compared"

RESULTS=$RESULTS BUDGET=${BUDGET:-260} bash benchmarks/gpu_bench.sh
code=$?
[ "$code" = 0 ] && code=$tests
[ "$code" = 0 ] && code=$compared
cp "$RESULTS/summary.md" "$OUT/" 2>/dev/null
tar -czf "$OUT/gpu_results.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
exit $code
