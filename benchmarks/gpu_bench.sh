#!/usr/bin/env bash
# Every GPU target of the project in one call (bf16, 224 px, one GPU), written to $RESULTS, most
# important first, so that a call cut short keeps what matters:
#  1. Shunted-S at batch 64 in every mode (eager, cudagraphs, compile, cudagraphs-eager) against the
#     eager reference formulation and timm's pvt_v2_b2: img/s, GMAC/s, peak memory, first step
#     (compile and capture included), a torch.profiler summary (GPU busy share, kernels per step).
#     The machine starts with no Inductor cache: the cudagraphs entry compiles first, cold, as a
#     user's first run does; later compiled entries (and the real run's resume) may reuse its kernels;
#  2. a real run in GRAPH_MODE (run.py trainer=gpu compile=$GRAPH_MODE): SIGTERM once its training
#     step is captured and replaying, the seconds it takes to stop (exit 75), then the same command
#     resumes it to the end (trains, validates, tests; metrics.json has the capture's seconds);
#  3. the input pipeline (bench --data, batch DATA_BATCH): per worker, the DataLoader at DATA_WORKERS
#     workers for data.pipeline=workers and =device, and the device pipeline's batch stage on the GPU,
#     on DATA_IMAGES JPEGs at ImageNet's sizes that it writes (kept for the next step);
#  4. a GRAPH_MODE run of RUN_MODEL fed from those JPEGs (data=imagenet's recipe) with
#     data.pipeline=device and 2 workers, JPEG_EPOCHS epochs at the first batch size: its img/s against
#     step 1's GRAPH_MODE entry (synthetic batches), and its data_wait_share;
#  5. Lightning against a bare loop over the same graphed step (bench --loop-overhead);
#  6. each mixer with its peer's FFN in eager and GRAPH_MODE against the peer (swin/plain vs Swin-T,
#     pvt/dwconv vs PVTv2-b2, vit/plain vs DeiT-S), at batch 64;
#  7. the same at the other batch sizes (BATCHES after the first), Shunted-S in eager and GRAPH_MODE;
#  8. one segmentation training step (SEG_MODEL + Semantic FPN, SEG_IMAGE px, batch 8, 150 classes).
# Each step is bounded by STEP_TIMEOUT (then SIGTERM, and SIGKILL KILL_AFTER seconds later: a run that
# handles SIGTERM saves and exits, a hung one is killed) and by what is left of BUDGET seconds for the
# whole script: a step that would start with less than MIN_STEP seconds left is skipped. summary.md
# says first which steps failed, timed out or were skipped, then gives every table.
#
#   bash benchmarks/gpu_bench.sh                      # on the GPU machine, from the repository root
#
# On the lent GPU machine it runs inside gpu_call.sh, which installs what the machine lacks
# (benchmarks/gpu_wheels.sh); `DRY_RUN=1 bash benchmarks/gpu_call.sh` runs it tiny on the CPU.
set -uo pipefail
RESULTS=${RESULTS:-benchmarks/gpu}
DEVICE=${DEVICE:-cuda}
MODEL=${MODEL:-shunted_s}        # a timm model name (the bench)
RUN_MODEL=${RUN_MODEL:-shunted_s}  # the same as a model config (conf/model), for run.py
IMAGE=${IMAGE:-224}
BATCHES=${BATCHES:-64 128}
WARMUP=${WARMUP:-5}
ITERS=${ITERS:-20}
PEERS=${PEERS:-1}
MIXERS=${MIXERS:-swin pvt vit}
GRAPH_MODE=${GRAPH_MODE:-cudagraphs}  # the graph mode of the mixers, the loop, the real run
RUN_TRAIN=${RUN_TRAIN:-4096}          # the real run: SHAPES training images, 2 epochs (generated first:
RUN_BATCH=${RUN_BATCH:-128}
RUN_EVAL=${RUN_EVAL:-512}              # about 10 ms each at 224 px), and its validation and test images
RUN_WORKERS=${RUN_WORKERS:-8}
RUN_DIR=${RUN_DIR:-/tmp/gpu_bench_run}  # the real run's data and run directory (checkpoints): not results
STOP_AFTER=${STOP_AFTER:-CUDA graphs: training step captured}  # the real run's log line that arms the SIGTERM
DATA_IMAGES=${DATA_IMAGES:-2048}  # JPEGs the data bench writes, and the JPEG run trains on
DATA_WORKERS=${DATA_WORKERS:-2,8}  # the DataLoader's workers in the data bench
DATA_BATCH=${DATA_BATCH:-128}
JPEG_EPOCHS=${JPEG_EPOCHS:-3}
SEG_MODEL=${SEG_MODEL:-shunted_s}  # a model config (conf/model)
SEG_IMAGE=${SEG_IMAGE:-512}
BACKEND=${BACKEND:-inductor}
PRECISION=${PRECISION:-bf16}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
KILL_AFTER=${KILL_AFTER:-10}
BUDGET=${BUDGET:-360}
MIN_STEP=${MIN_STEP:-20}
PYTHON=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit
# Absolute: a step that starts run.py from another folder still finds the package.
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$RESULTS"
failures=()
first_batch=${BATCHES%% *}

write_summary() {  # summary.md as it stands: failures first, then every table; rewritten after every step
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
}

record() {  # record NAME EXIT_CODE LIMIT: a step's failure, by how it ended
    local name=$1 code=$2 limit=$3
    case $code in
    0) return 0 ;;
    124) failures+=("$name: timed out after ${limit} s (SIGTERM)") ;;
    137) failures+=("$name: hung, killed ${KILL_AFTER} s after its SIGTERM at ${limit} s") ;;
    *) failures+=("$name: failed with exit code $code") ;;
    esac
    echo "!! ${failures[-1]}"
    return 1
}

limit() {  # the seconds a step may take now: STEP_TIMEOUT, or what is left of BUDGET
    local left=$((BUDGET - SECONDS - KILL_AFTER))
    echo $((left < STEP_TIMEOUT ? left : STEP_TIMEOUT))
}

runnable() {  # runnable NAME: whether enough of BUDGET is left to start the step
    if [ $((BUDGET - SECONDS - KILL_AFTER)) -lt "$MIN_STEP" ]; then
        failures+=("$1: skipped, $((BUDGET - SECONDS)) s of the ${BUDGET} s budget left")
        echo "!! ${failures[-1]}"
        return 1
    fi
}

step() {  # step NAME COMMAND...: bounded in time; a failure is recorded with how it ended
    local name=$1 seconds code
    shift
    runnable "$name" || return 1
    seconds=$(limit)
    timeout -k "$KILL_AFTER" "$seconds" "$@"
    record "$name" $? "$seconds"
    code=$?
    write_summary
    return $code
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

mixers() {  # mixers BATCH: each mixer with its peer's FFN, against the peer
    local mixer mlp peer_model
    for mixer in $MIXERS; do
        case $mixer in
        swin) mlp=plain peer_model=swin_tiny_patch4_window7_224 ;;
        pvt) mlp=dwconv peer_model=pvt_v2_b2 ;;
        vit) mlp=plain peer_model=deit_small_patch16_224 ;;
        esac
        bench "${mixer}_${mlp}_b$1" --batch-size "$1" --attention "$mixer" --mlp "$mlp" \
            --modes "eager,$GRAPH_MODE" $(peer "$peer_model")
    done
}

real_run() {  # the run a researcher starts: stopped by SIGTERM while replaying, then resumed to its end
    local name=real_run log="$RESULTS/real_run.log" table="$RESULTS/real_run.md" trainer=gpu seconds pid code sent
    [ "$DEVICE" = cuda ] || trainer=cpu
    local cmd=("$PYTHON" run.py "model=$RUN_MODEL" attention=shunted mlp=detail_specific "trainer=$trainer"
        logger=csv "compile=$GRAPH_MODE" "data.image_size=$IMAGE" "data.num_train=$RUN_TRAIN" "data.num_val=$RUN_EVAL"
        "data.num_test=$RUN_EVAL" "data.batch_size=$RUN_BATCH" "data.num_workers=$RUN_WORKERS" trainer.max_epochs=2
        "paths.data_dir=$RUN_DIR/data" "hydra.run.dir=$RUN_DIR/run")
    echo "== $name: ${cmd[*]}"
    runnable "$name" || return
    rm -rf "$RUN_DIR/run"  # a run left by an earlier call would be resumed, not started
    seconds=$(limit)
    timeout -k "$KILL_AFTER" "$seconds" "${cmd[@]}" >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null && ! grep -qF "$STOP_AFTER" "$log"; do sleep 0.5; done
    sent=
    if kill -0 "$pid" 2>/dev/null; then
        sleep 2  # replaying by now
        sent=$SECONDS
        # To the run itself, not to `timeout`, which would pass it to its whole process group: the loader
        # workers would die of it and the run would fail (exit 1) instead of saving its step (exit 75).
        pkill -TERM -P "$pid" || kill -TERM $(cat "/proc/$pid/task/$pid/children")
    fi
    wait "$pid"
    code=$?
    {
        echo "| | |"
        echo "|---|---|"
        echo "| command | \`${cmd[*]}\` |"
        echo "| SIGTERM | ${sent:+2 s after the log said: $(grep -m1 -F "$STOP_AFTER" "$log" | sed 's/^\[[^]]*\]//')} |"
        echo "| exit code (75: stopped, step saved) | $code |"
        echo "| seconds from SIGTERM to exit | ${sent:+$((SECONDS - sent))} |"
    } >"$table"
    tail -n 5 "$log"
    if [ -z "$sent" ] || [ "$code" != 75 ]; then
        record "$name (stop)" "$code" "$seconds" && failures+=("$name (stop): ended before its SIGTERM")
        return
    fi
    echo "== $name: the same command again, resuming"
    runnable "$name (resume)" || return
    seconds=$(limit)
    timeout -k "$KILL_AFTER" "$seconds" "${cmd[@]}" >>"$log" 2>&1
    record "$name (resume)" $? "$seconds" || return
    cp "$RUN_DIR/run/metrics.json" "$RESULTS/real_run_metrics.json"
    "$PYTHON" - "$RESULTS/real_run_metrics.json" >>"$table" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
keys = ("global_step", "val/top1", "test/top1", "train/images_per_sec", "train/first_step_s", "cuda_graphs",
        "cuda_graphs_setup_s", "peak_gpu_memory_mb", "wall_time_s")
for k in keys:
    print(f"| resumed run: {k} | {m.get(k)} |")
EOF
}

jpeg_run() {  # a graph-mode run on JPEGs decoded and augmented on the device: does it keep up with synthetic batches?
    local name=jpeg_run trainer=gpu
    [ "$DEVICE" = cuda ] || trainer=cpu
    local cmd=("$PYTHON" run.py "model=$RUN_MODEL" attention=shunted mlp=detail_specific "trainer=$trainer"
        logger=csv "compile=$GRAPH_MODE" data=imagenet "data.root=$RUN_DIR/jpegs" data.pipeline=device
        data.num_workers=2 "data.image_size=$IMAGE" "data.batch_size=$first_batch" "trainer.max_epochs=$JPEG_EPOCHS"
        "hydra.run.dir=$RUN_DIR/jpeg_run")
    echo "== $name: ${cmd[*]}"
    rm -rf "$RUN_DIR/jpeg_run"
    step "$name" "${cmd[@]}" >"$RESULTS/jpeg_run.log" 2>&1 || { tail -n 20 "$RESULTS/jpeg_run.log"; return; }
    tail -n 8 "$RESULTS/jpeg_run.log"
    cp "$RUN_DIR/jpeg_run/metrics.json" "$RESULTS/jpeg_run_metrics.json"
    "$PYTHON" - "$RESULTS/jpeg_run_metrics.json" "$RESULTS/shunted_b$first_batch.json" "$GRAPH_MODE" \
        "${cmd[*]}" >"$RESULTS/jpeg_run.md" <<'EOF'
import json, sys
metrics, synthetic_file, mode, command = sys.argv[1:]
run = json.load(open(metrics))
print(f"| | |\n|---|---|\n| command | `{command}` |")
for k in ("train/images_per_sec", "train/data_wait_share", "train/first_step_s", "cuda_graphs", "wall_time_s"):
    print(f"| {k} | {run.get(k)} |")
try:
    synthetic = next(r for r in json.load(open(synthetic_file))["results"] if r.get("mode") == mode)
except (OSError, StopIteration, KeyError):
    print("| this run / synthetic batches | step 1's table is missing |")
else:
    print(f"| bench's {mode} img/s on synthetic batches (step 1) | {synthetic['train_images_per_s']:.0f} |")
    ratio = run["train/images_per_sec"] / synthetic["train_images_per_s"]
    print(f"| this run / synthetic (goal: >= 0.85 with data_wait_share < 0.05) | {ratio:.2f} |")
EOF
}

bench "shunted_b$first_batch" --batch-size "$first_batch" --attention shunted --mlp detail_specific \
    --modes eager,cudagraphs,compile,cudagraphs-eager --reference $(peer pvt_v2_b2)
real_run
write_summary
echo "== data_pipeline"
step data_pipeline "$PYTHON" -m shunted_lab.bench --data "data.image_size=$IMAGE" "data.batch_size=$DATA_BATCH" \
    --device "$DEVICE" --make-images "$DATA_IMAGES" --images-dir "$RUN_DIR/jpegs" --loader-workers "$DATA_WORKERS" \
    --rounds 1 --out "$RESULTS/data_pipeline.json"
jpeg_run
write_summary
echo "== loop overhead"
step loop_overhead "$PYTHON" -m shunted_lab.bench --loop-overhead --device "$DEVICE" --precision "$PRECISION" \
    --models "$MODEL" --image-size "$IMAGE" --batch-size "$first_batch" --modes "$GRAPH_MODE" \
    --compile-backend "$BACKEND" --warmup "$WARMUP" --iters "$ITERS" --rounds 2 --out "$RESULTS/loop_overhead.json"
mixers "$first_batch"
for batch in ${BATCHES#"$first_batch"}; do
    bench "shunted_b$batch" --batch-size "$batch" --attention shunted --mlp detail_specific \
        --modes "eager,$GRAPH_MODE" $(peer pvt_v2_b2)
    mixers "$batch"
done
echo "== segmentation step"
step segmentation "$PYTHON" benchmarks/segmentation_step.py --device "$DEVICE" --precision "$PRECISION" \
    --model "$SEG_MODEL" --image-size "$SEG_IMAGE" --batch-size 8 --steps $((WARMUP + ITERS)) \
    --modes "eager,$GRAPH_MODE" --compile-backend "$BACKEND" --out "$RESULTS/segmentation"

write_summary
cat "$RESULTS/summary.md"
[ ${#failures[@]} -eq 0 ]
