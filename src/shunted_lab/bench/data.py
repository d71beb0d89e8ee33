"""`--data`: how fast the input pipeline delivers training images, for both data.pipeline options.

    python -m shunted_lab.bench --data data=imagenet data.root=/data/imagenet
    python -m shunted_lab.bench --data --make-images 512 --out benchmarks/results/cpu_data_pipeline.json

Per loader worker process (this process, one torch thread: what a DataLoader worker has), in images/s:
reading a file's bytes, decoding it (PIL, as the workers pipeline does), the `workers` pipeline's
whole training item (decode and timm's transform), and the `device` pipeline's worker item (read the
bytes, the header, the draws). Then the real training DataLoader of each pipeline at 1, 2, ... N
workers, and the device pipeline's batch stage (decode and augment a collated batch on --device).

Without a `data.root` among the overrides, the bench writes `--make-images` JPEGs at ImageNet's sizes
(500x375 and its kin, quality 90, photo-like content: smooth colour fields, edges and grain) to a
temporary image folder (or to `--images-dir`, kept, and read again if it holds them already), and
uses data=imagenet's recipe unless another `data=` is given.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Sizes ImageNet's training JPEGs come in most often (width, height), and how often, roughly.
IMAGENET_SIZES = [((500, 375), 0.45), ((375, 500), 0.15), ((500, 333), 0.15), ((500, 400), 0.1), ((333, 500), 0.1),
                  ((640, 480), 0.05)]  # fmt: skip


def photo_like(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields from an upsampled coarse grid, a few hard-edged patches and sensor grain:
    at quality 90 about 105 KB a file, near ImageNet's training average (about 108 KB: 138 GB over 1.28 M)."""
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float32)
    for _ in range(6):
        top, left = rng.integers(0, height - 40), rng.integers(0, width - 40)
        pixels[top : top + rng.integers(20, 160), left : left + rng.integers(20, 160)] = rng.integers(0, 256, 3)
    pixels += rng.normal(0, 24, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_jpegs(root: Path, count: int, classes: int = 8, seed: int = 0) -> Path:
    """`count` training JPEGs (and a few val ones) in the ImageNet layout under root."""
    rng = np.random.default_rng(seed)
    sizes, weights = zip(*IMAGENET_SIZES, strict=True)
    for split, n in (("train", count), ("val", classes)):
        for i in range(n):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            width, height = sizes[rng.choice(len(sizes), p=weights)]
            photo_like(width, height, rng).save(folder / f"{i}.jpg", quality=90)
    return root


def per_second(work, items: list, repeats: int = 1) -> float:
    """Items per second of `work(item)` over `items` (after one untimed call), the best of `repeats` passes."""
    work(items[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def loader_rate(datamodule, workers: int, epochs: int) -> float:
    """Images/s of the training DataLoader with `workers` processes over `epochs` epochs, after one
    untimed epoch that starts them (persistent, as in training): each timed epoch pays for its own
    prefetch at the start, as a training epoch does."""
    datamodule.num_workers = workers
    loader = datamodule.train_dataloader()
    for _ in loader:
        pass
    images, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        loader.sampler.set_epoch(epoch)
        images += sum(len(batch[1]) if isinstance(batch, list | tuple) else len(batch) for batch in loader)
    rate = images / (time.perf_counter() - start)
    del loader  # its worker processes end with it
    return rate


def build_data(overrides: list[str], pipeline: str):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from ..config import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"data.pipeline={pipeline}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule


def data_bench(overrides: list[str], args) -> dict:
    from ..data.device.encoded import collate_encoded
    from ..data.images import decode_rgb
    from ..data.resumable import SeededItems

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if not any(o.startswith("data.root=") for o in overrides):
            root = Path(args.images_dir or tmp)
            if not (root / "train").is_dir():
                make_jpegs(root, args.make_images)
            data = [] if any(o.startswith("data=") for o in overrides) else ["data=imagenet"]
            overrides = [*data, *overrides, f"data.root={root}"]
        if not any(o.startswith("data.batch_size=") for o in overrides):
            overrides = [*overrides, "data.batch_size=64"]
        workers, on_device = build_data(overrides, "workers"), build_data(overrides, "device")
        count = min(len(workers.train_set), args.make_images)
        images, read = list(range(count)), workers.train_set.read  # either reader's samples, by index
        decode = lambda i: decode_rgb(read(i)[0], str(i))  # noqa: E731
        batch_size = on_device.batch_size
        keys = [
            [(0, i) for i in range(start, start + batch_size)] for start in range(0, count - batch_size + 1, batch_size)
        ]
        worker_items, device_items = SeededItems(workers.train_set, 0), SeededItems(on_device.train_set, 0)
        # A worker fetches a batch's items at once (SeededItems.__getitems__), as the DataLoader asks.
        per_worker = {
            "read the bytes": per_second(read, images, args.rounds),
            "decode (PIL)": per_second(decode, images, args.rounds),
            "workers pipeline: training item (decode, timm's transform)": batch_size
            * per_second(worker_items.__getitems__, keys, args.rounds),
            "device pipeline: worker's item (read the bytes and the header, draw)": batch_size
            * per_second(lambda batch: collate_encoded(device_items.__getitems__(batch)), keys, args.rounds),
        }
        batches = [collate_encoded(device_items.__getitems__(batch)) for batch in keys]

        def on_the_device(batch) -> None:
            on_device.pipeline.augment(batch, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        torch.set_num_threads(threads)
        device_stage = batch_size * per_second(on_the_device, batches, args.rounds)
        torch.set_num_threads(1)
        loaders = {
            name: {w: loader_rate(dm, w, args.loader_epochs) for w in args.loader_workers}
            for name, dm in (("workers", workers), ("device", on_device))
        }
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return dict(
        overrides=overrides,
        images=count,
        image_size=workers.image_size,
        batch_size=batch_size,
        per_worker=per_worker,
        speedup=per_worker[list(per_worker)[3]] / per_worker[list(per_worker)[2]],
        loaders=loaders,
        device_stage=dict(device=device_name, threads=threads, images_per_s=device_stage),
    )


def data_markdown(result: dict) -> str:
    lines = [
        f"{result['images']} training images, {result['image_size']} px training crops, batch "
        f"{result['batch_size']}; `{' '.join(o for o in result['overrides'] if not o.startswith('data.root'))}`.",
        "",
        "| per loader worker (one process, one thread) | img/s |",
        "|---|---|",
        *(f"| {name} | {rate:.0f} |" for name, rate in result["per_worker"].items()),
        "",
        f"The device pipeline's worker item is {result['speedup']:.1f}x the workers pipeline's.",
        "",
        "| training DataLoader, img/s | "
        + " | ".join(f"{w} workers" for w in next(iter(result["loaders"].values())))
        + " |",
        "|---|" + "---|" * len(next(iter(result["loaders"].values()))),
        *(
            f"| data.pipeline={name} | " + " | ".join(f"{rate:.0f}" for rate in rates.values()) + " |"
            for name, rates in result["loaders"].items()
        ),
        "",
        f"The device pipeline's batch stage (decode and augment a collated batch) on {result['device_stage']['device']}"
        f" ({result['device_stage']['threads']} threads): {result['device_stage']['images_per_s']:.0f} img/s.",
    ]
    return "\n".join(lines) + "\n"
