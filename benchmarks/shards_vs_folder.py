"""Reading training images from tar shards against the same images as a folder, on this machine's disk.

    python benchmarks/shards_vs_folder.py --out benchmarks/results/cpu_shards_vs_folder

Writes `--images` JPEGs at ImageNet's sizes (bench/data.py's make_jpegs: about 105 KB each, 8 classes)
as an image folder, packs them (python -m shunted_lab.data.readers.pack, 1250 samples a shard as ImageNet's),
and measures in one process with one torch thread (what a loader worker has), in images/s, in the
training order of each format (a (seed, epoch) shuffle of the files; of the shards, then of the samples
within runs of data.shuffle_shards shards):

- reading an image's bytes (folder: open and read the file; shards: the sample from its shard);
- the whole training item of data=imagenet's `workers` pipeline (read, decode, timm's transform).

Each twice: with the files in the page cache (warm), and cold, every image file and shard dropped
from the page cache first (posix_fadvise DONTNEED; the shards are opened afresh). Writes <out>.json
and <out>.md.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import ROOT, write_result

from shunted_lab.bench.data import build_data, make_jpegs
from shunted_lab.data.readers.pack import main as pack
from shunted_lab.data.readers.shards import TarShards
from shunted_lab.data.resumable import ResumableSampler, SeededItems


def drop_from_page_cache(folder: Path) -> None:
    os.sync()
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def rate(work, items: list) -> float:
    start = time.perf_counter()
    for item in items:
        work(item)
    return len(items) / (time.perf_counter() - start)


def measure(datamodule, folder: Path, cold: bool, batch: int = 64) -> dict:
    """Images/s of reading the bytes and of the training item, in the format's training order."""
    dataset = datamodule.train_set
    sampler = ResumableSampler(dataset, batch, seed=0, shard_lengths=datamodule.shard_lengths)
    order = [index for _, index in sampler]
    read = dataset.read  # either reader's samples, by index
    keys = [[(0, i) for i in order[start : start + batch]] for start in range(0, len(order), batch)]
    result = {}
    for name, work, items, per_item in (
        ("read the bytes", read, order, 1),
        ("training item (decode, timm's transform)", SeededItems(dataset, 0).__getitems__, keys, batch),
    ):
        if cold:
            drop_from_page_cache(folder)
            if isinstance(dataset, TarShards):
                dataset.open.clear()
        else:
            rate(work, items[: max(1, len(items) // 8)])  # warm what this pass reads first
        result[name] = per_item * rate(work, items)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2500)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the repository's disk, not a tmpfs
        images, shards = Path(tmp) / "images", Path(tmp) / "shards"
        make_jpegs(images, args.images)
        pack([str(images), str(shards), "--workers=2"])
        recipe = ["data=imagenet", "data.image_size=224", "data.num_workers=0"]
        formats = {
            "folder": (build_data([*recipe, f"data.root={images}"], "workers"), images),
            "shards": (build_data([*recipe, "data.format=shards", f"data.root={shards}"], "workers"), shards),
        }
        size = sum(p.stat().st_size for p in (images / "train").rglob("*.jpg")) / args.images
        results = {
            f"{name}, {'cold' if cold else 'warm'}": measure(dm, folder, cold)
            for cold in (False, True)
            for name, (dm, folder) in formats.items()
        }
    meta = dict(
        command=" ".join(sys.argv),
        images=args.images,
        mean_jpeg_kb=size / 1e3,
        shards=-(-args.images // 1250),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
    )
    columns = list(next(iter(results.values())))
    lines = [
        f"{args.images} training JPEGs ({size / 1e3:.0f} KB on average), {meta['shards']} shards; one process, "
        "one thread; images/s in each format's training order.",
        "",
        "| format, page cache | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        *(f"| {name} | " + " | ".join(f"{r[c]:.0f}" for c in columns) + " |" for name, r in results.items()),
    ]
    write_result(args.out, dict(meta=meta, results=results), "\n".join(lines))


if __name__ == "__main__":
    main()
