"""The image-folder presets on real small images: both learn them in a minute or two.

    pip install scikit-learn   # ships the images: UCI handwritten digits, 1,797 of 8x8 px, 10 classes
    python benchmarks/imagefolder_small.py [--data imagefolder] [--out benchmarks/results/cpu_imagefolder_small.json] \
        [-- extra overrides]

Writes the digits as PNGs in the image-folder layout (a fixed 80/20 split per class), runs
`python run.py data=<preset>` (default imagefolder_small) on them, and records the run's metrics
and wall time.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import ROOT, read_metrics, run_py
from PIL import Image
from sklearn.datasets import load_digits


def write_digits(root: Path, val_fraction: float = 0.2) -> dict[str, int]:
    digits = load_digits()
    rng = np.random.default_rng(0)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == label))
        num_val = round(len(indices) * val_fraction)
        for rank, i in enumerate(indices):
            split = "val" if rank < num_val else "train"
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)  # 17 grey levels -> 8-bit
            Image.fromarray(pixels, mode="L").convert("RGB").save(folder / f"{i}.png")
            counts[split] += 1
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="imagefolder_small", help="the data preset")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_imagefolder_small.json")
    parser.add_argument("overrides", nargs="*", help="extra run.py overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        counts = write_digits(Path(tmp) / "digits")
        wall = run_py(
            f"data={args.data}",
            f"data.root={tmp}/digits",
            "logger=csv",
            f"paths.root_dir={tmp}",
            f"hydra.run.dir={tmp}/run",
            "~callbacks.progress_bar",
            *args.overrides,
            cwd=Path(tmp),
        ).wall_s
        metrics = read_metrics(Path(tmp) / "run")
    keys = ("val/top1", "test/top1", "train/images_per_sec", "epochs", "global_step", "params", "gmacs")
    report = {
        "command": " ".join(["python benchmarks/imagefolder_small.py", f"--data {args.data}", *args.overrides]),
        "images": counts,
        "wall_time_s_incl_start": wall,
        **{k: metrics[k] for k in keys},
        "data": {
            "name": metrics["data"],
            "batch_size": metrics["config"]["data"]["batch_size"],
            "image_size": metrics["image_size"],  # the fitted size where the config left it null
        },
        "max_epochs": metrics["config"]["trainer"]["max_epochs"],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
