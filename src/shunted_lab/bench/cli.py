"""What every variant and its peers cost: params, GMACs, images/s, peak memory, FLOP efficiency.

    python -m shunted_lab.bench --models shunted_s --attention shunted --reference \\
        --peers pvt_v2_b2,swin_tiny_patch4_window7_224,deit_small_patch16_224 --batch-size 8

Random weights and inputs; `--warmup` untimed then `--iters` timed iterations, the median
reported. Training = forward, cross-entropy, backward, AdamW step. `--reference` adds the
published formulation (models/reference.py) with the same weights as the fast model, checks that
the outputs agree and reports the speed ratios. Each entry runs in its own process, so that its
peak memory is its own (on CPU, peak RSS includes the ~0.5 GB of the runtime itself). The entries
are measured in turn for `--rounds` rounds and each median pools all rounds: a machine whose
speed drifts over minutes (shared CPUs do, by 10-20%) then slows every entry alike.
`--op-times` (CPU) adds where a training step's time goes, op by op, for every entry.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from ..cpu_allocator import keep_freed_memory
from ..files import write_json, write_text
from ..models.reference import PRESETS
from .data import data_bench, data_markdown
from .loop import loop_overhead
from .measure import (
    AUTOCAST_DTYPES,
    GPU_BF16_PEAK_TFLOPS,
    MODES,
    images_per_s,
    matmul_peak_tflops,
    measure,
    summarise,
)
from .tables import add_comparisons, label, loop_markdown, markdown


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default shown (flags and unset options have none), and the examples kept as written."""

    def _get_help_string(self, action) -> str:
        if action.default in (None, False, "", argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return f"{action.help} (default: %(default)s)"


def entries(args) -> list[dict]:
    out = []
    ffn_recompute = args.ffn_recompute == "on"
    for model in args.models:
        for attention in args.attention:
            for mlp in args.mlp:
                out += [
                    dict(
                        kind="ours",
                        model=model,
                        attention=attention,
                        mlp=mlp,
                        image_size=args.image_size,
                        ffn_recompute=ffn_recompute,
                        mode=mode,
                    )
                    for mode in args.modes
                ]
        if args.reference and model in PRESETS:
            out.append(
                dict(
                    kind="reference",
                    model=model,
                    attention="shunted",
                    mlp="detail_specific",
                    image_size=args.image_size,
                )
            )
    out += [dict(kind="peer", model=p, attention="-", mlp="-", image_size=args.image_size) for p in args.peers]
    return out


EXAMPLES = """what to measure (the first word; `models` when none is given):
  models  the models' training and inference steps (the default)
  loop    Lightning against a bare loop over the same step, and SHAPES loading (old flag: --loop-overhead)
  data    the input pipeline, per loader worker and in the DataLoader (old flag: --data)

examples:
  python -m shunted_lab.bench models --models shunted_nano --image-size 64 --attention shunted,pvt,swin,vit
  python -m shunted_lab.bench models --models shunted_s --reference --peers pvt_v2_b2 --batch-size 8
  python -m shunted_lab.bench models --device cuda --precision bf16 --batch-size 64 --modes eager,cudagraphs --profile
  python -m shunted_lab.bench loop --models shunted_nano --image-size 64 --batch-size 128
  python -m shunted_lab.bench data data=imagenet data.root=/data/imagenet --loader-workers 1,2,4,8

Results: --out (JSON) and the same name with .md; benchmarks/README.md lists the committed ones."""


# A subcommand is the flag it stands for, so that the flags of earlier commands keep working.
SUBCOMMANDS = {"models": [], "loop": ["--loop-overhead"], "data": ["--data"]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv and argv[0] in SUBCOMMANDS:
        argv = [*SUBCOMMANDS[argv[0]], *argv[1:]]
    p = argparse.ArgumentParser(
        prog="python -m shunted_lab.bench [models | loop | data]",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )

    def csv_list(s: str) -> list[str]:
        return [v for v in s.split(",") if v]

    # String defaults go through `type` like the command line's values: the help shows them as typed.
    p.add_argument("--models", type=csv_list, default="shunted_s", help="our presets, comma-separated")
    p.add_argument("--attention", type=csv_list, default="shunted", help="mixers: vit,pvt,swin,shunted")
    p.add_argument("--mlp", type=csv_list, default="detail_specific", help="FFNs: plain,detail_specific,dwconv")
    p.add_argument("--peers", type=csv_list, default="", help="timm model names, random weights")
    p.add_argument(
        "--ffn-recompute",
        choices=("on", "off"),
        default="off",
        help="on: our FFNs recompute their hidden tensors in backward (the model's ffn_recompute)",
    )
    p.add_argument("--reference", action="store_true", help="add the published formulation with shared weights")
    p.add_argument("--batch-size", type=int, default=8, help="images per step")
    p.add_argument("--image-size", type=int, default=224, help="input side in pixels (square)")
    p.add_argument("--precision", choices=tuple(AUTOCAST_DTYPES), default="fp32", help="fp32, or autocast to bf16/fp16")
    p.add_argument("--channels-last", action="store_true", help="inputs and weights in channels-last memory format")
    p.add_argument(
        "--modes",
        type=csv_list,
        default="eager",
        help="how our models run, as compile= runs them: eager, compile (every block, regionally), cudagraphs "
        "(the whole step, and inference, in one CUDA graph around compiled blocks), cudagraphs-eager (the same "
        "graph around eager kernels); the reference and peers run eager",
    )
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled modes")
    p.add_argument("--profile", action="store_true", help="per entry: GPU busy share and kernel launches per step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (compilation happens here)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per round; the median is reported")
    p.add_argument("--rounds", type=int, default=3, help="entries measured in turn, this many times each")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON output; the markdown goes beside it")
    p.add_argument("--op-times", action="store_true", help="CPU: each op's time in a training step, per entry")
    p.add_argument("--loop-overhead", action="store_true", help="Lightning vs bare loop, and SHAPES loading, instead")
    p.add_argument(
        "--data",
        nargs="*",
        metavar="OVERRIDE",
        help="the input pipeline instead (bench/data.py): run.py's data overrides, e.g. data=imagenet data.root=DIR",
    )
    p.add_argument("--make-images", type=int, default=512, help="--data without data.root: JPEGs to write and read")
    p.add_argument("--images-dir", type=Path, help="--data: where those JPEGs go, kept (default: a temporary folder)")
    p.add_argument(
        "--loader-workers",
        type=lambda s: [int(v) for v in csv_list(s)],
        default="1,2",
        help="--data: DataLoader workers",
    )
    p.add_argument("--loader-epochs", type=int, default=2, help="--data: epochs timed per DataLoader, after one")
    p.add_argument("--entry", help=argparse.SUPPRESS)  # one entry, in a child process
    args = p.parse_args(argv)
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"--modes {','.join(unknown)} is not allowed; expected {', '.join(MODES)}")
    if args.op_times and args.device != "cpu":
        p.error(f"--op-times needs --device cpu (got {args.device}): CUDA ops run asynchronously; use torch.profiler")
    return args


def run_entry_in_child(entry: dict, argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "shunted_lab.bench", *argv, "--entry", json.dumps(entry)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"benchmark of {label(entry)} failed: {last[0]}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_results(rounds: list[list[dict]], failures: dict[str, str], meta: dict, args) -> str:
    """<out>.json and <out>.md of the entries measured so far (the failed ones listed), and the table."""
    results = [summarise(done, args.batch_size) for done in rounds if done and label(done[0]) not in failures]
    add_comparisons(results, meta["peak_tflops"])
    write_json(args.out, {"meta": meta, "results": results, "failures": failures})
    table = markdown(results, meta) + "".join(f"\n\nFailed: {k}: {why}" for k, why in failures.items())
    write_text(args.out.with_suffix(".md"), table)
    return table


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # As a CPU training run does (cpu_allocator.py); the entries' processes see the same environment.
    freed_memory_kept = torch.device(args.device).type == "cpu" and keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.entry:
        print(json.dumps(measure(json.loads(args.entry), args)))
        return 0
    if args.data is not None:
        result = data_bench(args.data, args)
        write_json(args.out, dict(meta=dict(vars(args), out=str(args.out), torch=torch.__version__), data=result))
        write_text(args.out.with_suffix(".md"), data_markdown(result))
        print(data_markdown(result))
        return 0
    if args.loop_overhead:
        result = loop_overhead(args)
        meta = dict(vars(args), out=str(args.out), torch=torch.__version__)
        write_json(args.out, dict(meta=meta, loop=result))
        write_text(args.out.with_suffix(".md"), loop_markdown(result))
        print(loop_markdown(result))
        return 0
    device = torch.device(args.device)
    allocator = "glibc keeping freed memory" if freed_memory_kept else "glibc's defaults"
    cpu = f"CPU, {torch.get_num_threads()} threads, {allocator}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    table_peak = (
        next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in name), None) if device.type == "cuda" else None
    )
    peak, peak_kind = (
        (table_peak, "bf16 spec")
        if table_peak
        else (matmul_peak_tflops(device, AUTOCAST_DTYPES[args.precision]), f"measured {args.precision} matmul")
    )
    todo = entries(args)
    rounds: list[list[dict]] = [[] for _ in todo]
    failures: dict[str, str] = {}  # an entry's label: why it failed (it is not run again)
    meta = dict(
        vars(args), out=str(args.out), device_name=name, peak_tflops=peak, peak_kind=peak_kind, torch=torch.__version__
    )
    meta.pop("entry")
    for i in range(args.rounds):
        for entry, done in zip(todo, rounds, strict=True):
            if label(entry) in failures:
                continue
            try:
                done.append(run_entry_in_child(entry, argv))
            except RuntimeError as e:
                failures[label(entry)] = str(e).splitlines()[0]
                print(f"round {i + 1}/{args.rounds} {e}", flush=True)
            else:
                train, infer = (images_per_s(done[-1][f"{p}_seconds"], args.batch_size) for p in ("train", "infer"))
                print(
                    f"round {i + 1}/{args.rounds} {label(entry)}: train {train:.1f} img/s, infer {infer:.1f} img/s",
                    flush=True,
                )
            # Saved after every entry: a call cut short, or an entry that fails, keeps what was measured.
            table = write_results(rounds, failures, meta, args)
    print(table)
    return 1 if failures else 0
