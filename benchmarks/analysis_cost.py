"""Wall time and peak memory of the analysis on a randomly initialised model (no checkpoint needed).

    python benchmarks/analysis_cost.py --model shunted_nano --image-size 64 --images 64 --out /tmp/a
    python benchmarks/analysis_cost.py --model shunted_s --image-size 224 --images 16 --batch-size 4 --out /tmp/b

Prints one JSON line: seconds of `analyze` (attention, ERF, Grad-CAM, figures) and the process's
peak resident memory before and after it.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import timm
import torch

import shunted_lab.models  # noqa: F401  (registers the presets with timm)
from shunted_lab.analysis import analyze
from shunted_lab.analysis.inputs import AnalysisInputs, centre_queries


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="shunted_nano")
    p.add_argument("--attention", default="shunted")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--show", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10, attention=args.attention)
    size = args.image_size
    inputs = AnalysisInputs(
        torch.randn(args.images, 3, size, size),
        torch.arange(args.images) % 10,
        centre_queries(args.images, (size, size)),
        "image centre",
    )
    before = peak_rss_mb()
    start = time.perf_counter()
    analyze(model, inputs, args.out, show=args.show, batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                **vars(args),
                "out": str(args.out),
                "seconds": round(seconds, 2),
                "peak_rss_mb_before": round(before),
                "peak_rss_mb_after": round(peak_rss_mb()),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
