#!/usr/bin/env bash
# The whole GPU table in one call (bf16, 224 px, batch 64 and 128, one GPU), written to $RESULTS:
# Shunted-S eager / compiled / CUDA graphs against the eager reference formulation and timm's
# pvt_v2_b2; each mixer with its peer's FFN against the peer (swin/plain vs Swin-T, pvt/dwconv vs
# PVTv2-b2, vit/plain vs DeiT-S); first training step (compile) time, a torch.profiler summary per
# entry (GPU busy share, kernel launches per step); Lightning vs a bare loop and the SHAPES loader;
# one segmentation training step (SEG_MODEL + Semantic FPN, SEG_IMAGE px, batch 8, 150 classes) eager
# and compiled: the segmentation objective on the same fast path.
# Sized for about 6 minutes on an H100; every step is bounded by STEP_TIMEOUT (then SIGTERM, and
# SIGKILL KILL_AFTER seconds later: a run that handles SIGTERM saves and exits, a hung one is killed),
# what finished stays, and summary.md says first which steps failed or timed out.
#
#   bash benchmarks/gpu_bench.sh                      # on the GPU machine, from the repository root
#
# A GPU machine without hydra-core/omegaconf/antlr4 gets them as wheels, made here once:
#   pip wheel --no-deps -w .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
# then carried (.whl, ignored by git) and installed before the script:
#   pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src
# The CPU test runs it tiny: DEVICE=cpu MODEL=shunted_nano IMAGE=64 BATCHES=2 MIXERS=vit PRECISION=fp32 ...
set -uo pipefail
RESULTS=${RESULTS:-benchmarks/gpu}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-shunted_s}
IMAGE=${IMAGE:-224}
BATCHES=${BATCHES:-64 128}
WARMUP=${WARMUP:-5}
ITERS=${ITERS:-20}
PEERS=${PEERS:-1}
MIXERS=${MIXERS:-swin pvt vit}
SEG_MODEL=${SEG_MODEL:-shunted_s}  # a model config (conf/model)
SEG_IMAGE=${SEG_IMAGE:-512}
BACKEND=${BACKEND:-inductor}
PRECISION=${PRECISION:-bf16}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
KILL_AFTER=${KILL_AFTER:-10}
PYTHON=${PYTHON:-python}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:src
mkdir -p "$RESULTS"
failures=()

step() {  # step NAME COMMAND...: bounded in time; a failure is recorded with how it ended
    local name=$1 code
    shift
    timeout -k "$KILL_AFTER" "$STEP_TIMEOUT" "$@"
    code=$?
    case $code in
    0) return ;;
    124) failures+=("$name: timed out after ${STEP_TIMEOUT} s (SIGTERM)") ;;
    137) failures+=("$name: hung, killed ${KILL_AFTER} s after its SIGTERM at ${STEP_TIMEOUT} s") ;;
    *) failures+=("$name: failed with exit code $code") ;;
    esac
    echo "!! ${failures[-1]}"
}

bench() {  # bench NAME ARGS...: one bench run, its table kept
    local name=$1
    shift
    echo "== $name: $*"
    step "$name" "$PYTHON" -m shunted_lab.bench --device "$DEVICE" --precision "$PRECISION" --image-size "$IMAGE" \
        --warmup "$WARMUP" --iters "$ITERS" --rounds 1 --profile --compile-backend "$BACKEND" --models "$MODEL" \
        --out "$RESULTS/$name.json" "$@"
}

peer() { [ "$PEERS" = 1 ] && echo "--peers $1"; }

for batch in $BATCHES; do
    bench "shunted_b$batch" --batch-size "$batch" --attention shunted --mlp detail_specific \
        --modes eager,compile,cudagraphs --reference $(peer pvt_v2_b2)
    for mixer in $MIXERS; do  # each mixer with its peer's FFN, against the peer
        case $mixer in
        swin) mlp=plain peer_model=swin_tiny_patch4_window7_224 ;;
        pvt) mlp=dwconv peer_model=pvt_v2_b2 ;;
        vit) mlp=plain peer_model=deit_small_patch16_224 ;;
        esac
        bench "${mixer}_${mlp}_b$batch" --batch-size "$batch" --attention "$mixer" --mlp "$mlp" \
            --modes eager,cudagraphs $(peer "$peer_model")
    done
done
last_batch=${BATCHES##* }
echo "== loop overhead"
step loop_overhead "$PYTHON" -m shunted_lab.bench --loop-overhead --device "$DEVICE" --precision "$PRECISION" \
    --models "$MODEL" --image-size "$IMAGE" --batch-size "$last_batch" --modes cudagraphs --compile-backend "$BACKEND" \
    --warmup "$WARMUP" --iters "$ITERS" --rounds 2 --out "$RESULTS/loop_overhead.json"
echo "== segmentation step"
step segmentation "$PYTHON" benchmarks/segmentation_step.py --device "$DEVICE" --precision "$PRECISION" \
    --model "$SEG_MODEL" --image-size "$SEG_IMAGE" --batch-size 8 --steps $((WARMUP + ITERS)) --modes eager,compile \
    --compile-backend "$BACKEND" --out "$RESULTS/segmentation"

{
    if [ ${#failures[@]} -eq 0 ]; then
        echo "All steps finished."
    else
        echo "Steps that did not finish (their tables are missing below):"
        echo
        printf -- '- %s\n' "${failures[@]}"
    fi
    echo
    for table in "$RESULTS"/*.md; do
        [ "$table" = "$RESULTS/summary.md" ] || { echo "## $(basename "$table" .md)"; echo; cat "$table"; echo; }
    done
} >"$RESULTS/summary.md"
cat "$RESULTS/summary.md"
[ ${#failures[@]} -eq 0 ]
