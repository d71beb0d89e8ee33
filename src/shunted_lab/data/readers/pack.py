"""python -m shunted_lab.data.readers.pack <image folder> <out dir>: an ImageNet-layout folder as tar shards.

The shards are those data.format=shards reads (shards.py), in the layout of layout.py: each sample
a `<key>.jpg` (the file's own bytes, not re-encoded; a PNG stays a `.png`), a `<key>.cls` (the class
index) and a `<key>.json` (the file it came from); `_info.json` lists each split's shards and sample
counts, and `classes.txt` the class names in index order. The training samples are shuffled across the shards
(the training order shuffles shards, then samples within a few of them).

Every image is decoded once: a file that does not decode is listed in `skipped.txt` and left out.
Shards are written by `--workers` processes, each whole or not at all (written beside, then
renamed); a stopped pack, run again with the same arguments, writes only the shards it lacks.
"""

import argparse
import io
import json
import os
import random
import shlex
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NoReturn

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ...exits import EXIT_CONFIG_ERROR
from ...files import atomic_write, write_json, write_text
from .layout import (
    CLASSES_FILE,
    IMAGE_MEMBERS,
    INFO_FILE,
    LABEL_MEMBER,
    SKIPPED_FILE,
    SPLIT_NAMES,
    folder_classes,
    published_split,
)

PROGRESS_FILE = "_pack_progress.json"  # the shards written so far, and the arguments they were written with


def folder_samples(folder: Path, split: str, classes: list[str]) -> list[tuple[str, int]]:
    """(path relative to the folder, class index) of every image of a split, in name order."""
    samples = []
    for index, name in enumerate(classes):
        for path in sorted((folder / split / name).iterdir()):
            if path.suffix.lower() in IMAGE_MEMBERS:
                samples.append((path.relative_to(folder).as_posix(), index))
    return samples


def decodes(data: bytes) -> str | None:
    """Why the image does not decode, or None. JPEGs decode at 1/8 scale (every byte still read)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (1, 1))
            image.load()
        return None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"


def write_shard(folder: Path, path: Path, samples: list[tuple[str, int, str]]) -> dict:
    """One shard of (relative path, class index, key) samples, whole or not at all; its record."""
    skipped, kept = [], 0

    def write(f) -> None:
        nonlocal kept
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for relative, label, key in samples:
                data = (folder / relative).read_bytes()
                problem = decodes(data)
                if problem:
                    skipped.append([relative, problem])
                    continue
                meta = json.dumps({"filename": relative, "label": label}).encode()
                kind = IMAGE_MEMBERS[Path(relative).suffix.lower()]
                for member, content in ((kind, data), (LABEL_MEMBER, str(label).encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{member}")
                    info.size, info.mode = len(content), 0o444
                    tar.addfile(info, io.BytesIO(content))
                kept += 1

    atomic_write(path, write)
    return {"samples": kept, "skipped": skipped}


def plan(folder: Path, name: str, per_shard: int, seed: int) -> tuple[list[str], dict[str, list]]:
    """The class names, and each shard's file name and samples, the same on every run."""
    try:
        classes = folder_classes(folder, str(folder))
    except ValueError as e:
        fail(str(e))
    shards = {}
    for split in SPLIT_NAMES:
        published = published_split(split)
        samples = folder_samples(folder, split, classes)
        if split == "train":
            random.Random(seed).shuffle(samples)
        keyed = [(relative, label, f"{published}_{i:08d}") for i, (relative, label) in enumerate(samples)]
        count = -(-len(keyed) // per_shard)
        digits = max(4, len(str(count - 1)))
        for s in range(count):
            shards[f"{name}-{published}-{s:0{digits}d}.tar"] = keyed[s * per_shard : (s + 1) * per_shard]
    return classes, shards


def pack(folder: Path, out: Path, name: str, per_shard: int = 1250, workers: int = 1, seed: int = 0) -> dict:
    """Write the shards `out` lacks, then `_info.json`, `classes.txt` and `skipped.txt`; the info."""
    classes, shards = plan(folder, name, per_shard, seed)
    arguments = {"folder": str(folder.resolve()), "name": name, "samples_per_shard": per_shard, "seed": seed}
    progress_path = out / PROGRESS_FILE
    done = json.loads(progress_path.read_text()) if progress_path.exists() else {"arguments": arguments, "shards": {}}
    if done["arguments"] != arguments:
        fail(f"{out} holds a pack made with {done['arguments']}; pack into another folder")
    for stale in out.glob(".*.tmp*"):  # a killed pack's half-written shards
        stale.unlink()
    todo = [s for s in shards if s not in done["shards"] or not (out / s).exists()]
    columns = (TextColumn("packing"), BarColumn(), MofNCompleteColumn(), TextColumn("images"), TimeRemainingColumn())
    with Progress(*columns) as bar, ProcessPoolExecutor(workers) as pool:
        task = bar.add_task("pack", total=sum(len(v) for v in shards.values()))
        bar.advance(task, sum(len(shards[s]) for s in shards if s not in todo))
        futures = {s: pool.submit(write_shard, folder, out / s, shards[s]) for s in todo}
        for shard, future in futures.items():
            done["shards"][shard] = future.result()
            write_json(progress_path, done)
            bar.advance(task, len(shards[shard]))
    info = {"name": name, "num_classes": len(classes), "splits": {}}
    for published in map(published_split, SPLIT_NAMES):
        names = [s for s in shards if f"-{published}-" in s]
        lengths = [done["shards"][s]["samples"] for s in names]
        info["splits"][published] = {
            "name": published,
            "num_samples": sum(lengths),
            "filenames": names,
            "shard_lengths": lengths,
        }
    skipped = [row for s in shards for row in done["shards"][s]["skipped"]]
    write_text(out / CLASSES_FILE, "".join(f"{c}\n" for c in classes))
    write_text(out / SKIPPED_FILE, "".join(f"{path}\t{why}\n" for path, why in skipped))
    write_json(out / INFO_FILE, info)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shunted_lab.data.readers.pack",
        description="Write an ImageNet-layout folder (train/<class>/*, val/<class>/*) as WebDataset tar shards "
        "for data.format=shards. Run it again after a stop: it writes only the shards it lacks.",
    )
    parser.add_argument("folder", type=Path, help="the image folder (ImageNet layout)")
    parser.add_argument("out", type=Path, help="where the shards, _info.json and classes.txt go")
    parser.add_argument("--name", help="the shards' file name prefix (default: the folder's name)")
    parser.add_argument("--samples-per-shard", type=int, default=1250, help="default: 1250 (ImageNet in 1024 shards)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes writing shards (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the shuffle of the training samples over the shards")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        fail(f"{args.out} is a file; give pack a folder to write the shards into (it is made if missing)")
    if not args.folder.is_dir():
        fail(f"{args.folder} is not a folder; expected an image folder with train/ and val/ (ImageNet layout)")
    args.out.mkdir(parents=True, exist_ok=True)
    info = pack(
        args.folder, args.out, args.name or args.folder.resolve().name, args.samples_per_shard, args.workers, args.seed
    )
    skipped = (args.out / SKIPPED_FILE).read_text().count("\n")
    for split in info["splits"].values():
        print(f"{split['name']}: {split['num_samples']} images in {len(split['filenames'])} shards")
    if skipped:
        print(f"left out {skipped} image{'s' * (skipped != 1)} that did not decode: {args.out / SKIPPED_FILE}")
    print(f"train on them: {train_command(args.out)}")


def train_command(out: Path) -> str:
    """The next step pack prints (tests/test_shards.py runs it)."""
    return shlex.join(["python", "run.py", "data=imagefolder", "data.format=shards", f"data.root={out.resolve()}"])


def fail(message: str) -> NoReturn:
    """A mistake of the user's: one line, exit 2 (as run.py's config errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


if __name__ == "__main__":
    main()
