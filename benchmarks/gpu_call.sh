#!/usr/bin/env bash
# The one call on a lent GPU machine: the CUDA tests, the graph mode against eager (graph_vs_eager.py),
# then gpu_bench.sh (the graph mode, the input pipeline, a run fed from JPEGs on the device, ...),
# within CALL_BUDGET seconds (480) counted from the start. With the `device` tool, from the
# repository root, after `bash benchmarks/gpu_wheels.sh` made .whl/ here:
#
#   run(command="bash benchmarks/gpu_call.sh", carry=[".whl"], timeout_s=540)
#
# $OUT (emptied first) gets call.log (everything printed), summary.md (each phase's exit code, then
# gpu_bench.sh's tables, failures first) and gpu_results.tar.gz (every table and JSON, the real run's
# log): three files, under the tool's eight. summary.md and the tarball are rewritten after every phase,
# and each phase saves what it measured as it goes, so a call cut short brings back what it had.
#
# DRY_RUN=1 runs every phase on the CPU at a tiny size (the CUDA-only tests skip): the rehearsal of the
# call, run by tests/test_gpu_call.py in a venv as bare as the GPU machine.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit
# The package reads its configs through the link src/shunted_lab/conf -> conf; a copy that dropped it
# (not a git clone) gets it back.
[ -e src/shunted_lab/conf ] || ln -s ../../conf src/shunted_lab/conf
RESULTS=${RESULTS:-/tmp/gpu_results}
CALL_BUDGET=${CALL_BUDGET:-480}
rm -rf "${OUT:?}"/* "$RESULTS"
mkdir -p "$OUT" "$RESULTS"
exec > >(tee "$OUT/call.log") 2>&1
# Absolute: graph_vs_eager.py and the tests start run.py from other folders.
export PYTHON=${PYTHON:-python3} PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
if [ "${DRY_RUN:-0}" = 1 ]; then
    # The tiny CPU configuration of benchmarks/README.md ("dry run"); a variable set by the caller wins.
    # The real run's stop: on the CPU nothing is captured, so it comes once the fit has started.
    # BACKEND=eager: torch.compile's path without AOT compilation (tests/test_compile.py compiles with
    # aot_eager and checks the numbers; here the call's plumbing is what is rehearsed).
    tiny=(DEVICE=cpu MODEL=shunted_nano IMAGE=64 BATCHES=2 ITERS=1 WARMUP=1 PEERS=0 MIXERS=vit PRECISION=fp32
        BACKEND=eager SEG_MODEL=nano SEG_IMAGE=64 GRAPH_MODE=cudagraphs-eager RUN_DIR=/tmp/gpu_dry_run
        RUN_MODEL=nano RUN_TRAIN=256 RUN_EVAL=32 RUN_BATCH=16 RUN_WORKERS=2 "STOP_AFTER=Total FLOPs"
        DATA_IMAGES=16 DATA_WORKERS=0 DATA_BATCH=8 JPEG_EPOCHS=1 "COMPARE_ARGS=--num-train 128 --epochs 1"
        "TESTS_MARK=not slow" "TESTS_K=odd_last_batch or trains_and_resumes_mid_epoch or waits_for_its_data")
    for setting in "${tiny[@]}"; do
        name=${setting%%=*}
        [ -n "${!name:-}" ] || export "${setting?}"
    done
fi
export DEVICE=${DEVICE:-cuda}
codes=()
left() { echo $((CALL_BUDGET - SECONDS)); }
within() {  # within SHARE CAP: CAP seconds, or SHARE percent of what is left if that is less
    local share=$(($(left) * $1 / 100))
    echo $((share < $2 ? share : $2))
}
save() {  # summary.md and the tarball as they stand: rewritten after every phase
    {
        echo "# gpu_call.sh at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), ${SECONDS} s"
        echo
        printf -- '- %s\n' "${codes[@]}"
        echo
        [ -f "$RESULTS/graph_vs_eager.md" ] && { echo "## graph_vs_eager"; echo; cat "$RESULTS/graph_vs_eager.md"; }
        [ -f "$RESULTS/summary.md" ] && { echo "## gpu_bench.sh"; echo; cat "$RESULTS/summary.md"; }
    } >"$OUT/summary.md"
    tar -czf "$OUT/gpu_results.tar.gz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
}

if [ -d .whl ]; then
    timeout -k 10 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
[ "$DEVICE" = cuda ] && timeout -k 5 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
timeout -k 10 60 "$PYTHON" -c "import torch, timm, lightning, hydra, shunted_lab
print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', lightning.__version__)" || exit

echo "== CUDA tests, slow ones included (the graph mode, the device pipeline, the data wait in a graph-mode run)"
# -o addopts= : pyproject's `-n auto` needs pytest-xdist, which the GPU machine lacks.
limit=$(within 30 150)
# TESTS_MARK, TESTS_K: a marker and a name expression. The dry run leaves the slow tests to the suite,
# which runs them all anyway, and runs one test of each file: every file is still collected (imported).
timeout -k 10 "$limit" "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts= ${TESTS_MARK:+-m "$TESTS_MARK"} \
    ${TESTS_K:+-k "$TESTS_K"} \
    tests/test_cuda_graphs.py \
    tests/test_device_augment.py "tests/test_train.py::test_a_run_that_waits_for_its_data_logs_the_share_per_epoch_and_says_what_to_try"
tests=$?
codes+=("CUDA tests: exit code $tests (limit $limit s)")
save

echo "== The graph mode against eager: one seed, validations inside the fit, scores side by side"
limit=$(within 30 100)
# shellcheck disable=SC2086  # COMPARE_ARGS is a list of arguments
timeout -k 10 "$limit" "$PYTHON" benchmarks/graph_vs_eager.py --out "$RESULTS/graph_vs_eager" ${COMPARE_ARGS:-}
compared=$?
codes+=("graph vs eager: exit code $compared (limit $limit s)")
save

budget=$(($(left) - 15))
RESULTS=$RESULTS BUDGET=$budget bash benchmarks/gpu_bench.sh
code=$?
codes+=("gpu_bench.sh: exit code $code (budget $budget s)")
save
[ "$code" = 0 ] && code=$tests
[ "$code" = 0 ] && code=$compared
exit $code
