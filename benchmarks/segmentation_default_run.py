"""The default segmentation run against its budget: `python run.py objective=segmentation` timed from the
outside, and its scores beside those of predicting the background everywhere on the same splits.

    python benchmarks/segmentation_default_run.py --out benchmarks/results/cpu_segmentation_default_run

Writes <out>.json and <out>.md; the run itself goes to a temporary directory.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from harness import read_metrics, run_py, write_result
from hydra.utils import instantiate
from omegaconf import OmegaConf

from shunted_lab.training.metrics import SegmentationScores


def background_only(data_cfg: dict) -> dict[str, float]:
    """val/test mIoU and pixel accuracy of predicting class 0 (the background) for every pixel."""
    data = instantiate(OmegaConf.create(data_cfg))
    data.setup("fit")
    out = {}
    for split in ("val", "test"):
        scores = SegmentationScores(data.class_names, data.ignore_index, data.group_names)
        for _, labels, bins in getattr(data, f"{split}_set"):
            scores.update(torch.zeros_like(labels)[None], labels[None], bins[None])
        computed = scores.compute()
        out |= {f"{split}/{k}": float(computed[k]) for k in ("miou", "pixel_acc")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="path without suffix: <out>.json and <out>.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wall = run_py("objective=segmentation", f"hydra.run.dir={tmp}/run", cwd=Path(tmp)).wall_s
        metrics = read_metrics(Path(tmp) / "run")
    data_cfg = metrics["config"]["data"] | {"root": None}  # regenerated here, not read from the run's cache
    baseline = background_only(data_cfg)
    keys = ("val/miou", "test/miou", "val/pixel_acc", "test/pixel_acc")
    result = {
        "command": "python run.py objective=segmentation",
        "wall_s": wall,
        "run": {k: metrics[k] for k in (*keys, "wall_time_s", "train/images_per_sec", "epochs", "global_step")},
        "background_only": baseline,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    lines = [
        f"# The default segmentation run (nano, SHAPES scenes, {metrics['epochs']} epochs) against predicting the "
        "background",
        "",
        f"`python benchmarks/{Path(__file__).name} --out {args.out}`: `{result['command']}`, "
        f"{wall:.0f} s from start to exit on {result['threads']} CPU threads (torch {torch.__version__}).",
        "",
        "| | val mIoU | test mIoU | val pixel acc | test pixel acc |",
        "|---|---|---|---|---|",
    ]
    for name, scores in (("default run", result["run"]), ("background everywhere", baseline)):
        lines.append(f"| {name} | " + " | ".join(f"{100 * scores[k]:.1f}" for k in keys) + " |")
    write_result(Path(args.out), result, "\n".join(lines))


if __name__ == "__main__":
    main()
