"""Compose the real configs for tests: tiny data, CSV logging, everything under tmp_path."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from shunted_lab.config import CONF_DIR as CONF
from shunted_lab.files import atomic_write
from shunted_lab.training.checkpoint_io import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from harness import run_command, run_env  # noqa: E402  (the benchmarks' way to run run.py, shared)

CONF_DIR = str(CONF)
# Key listings of the official release files (published facts, kept in the repository: tests read nothing beside it).
DATA_DIR = Path(__file__).resolve().parent / "data"

SHAPES_TINY = ["data.num_train=64", "data.num_val=32", "data.num_test=32"]
TINY = [
    "logger=csv",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "callbacks.throughput.warmup_batches=1",
]


def run_py(tmp_path: Path, *overrides: str, **kwargs) -> subprocess.Popen:
    """run.py in a subprocess, in tmp_path, without W&B credentials or a Ray cluster to join; stdout and
    stderr together."""
    env = run_env(
        NETRC=str(tmp_path / "no-netrc"),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),  # the test callbacks
    )
    return subprocess.Popen(
        run_command(*overrides, f"paths.root_dir={tmp_path}"),  # flags (-m) first
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
        **kwargs,
    )


def checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")["global_step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def compose_cfg(tmp_path: Path, *overrides: str, tiny: bool = True):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.root_dir={tmp_path}",
                f"paths.output_dir={tmp_path}/out",
                *(TINY if tiny else []),
                *(SHAPES_TINY if tiny and not any(o.startswith("data=") for o in overrides) else []),
                *overrides,
            ],
        )


def image_folder_cfg(tmp_path: Path, *overrides: str):
    """data=imagefolder on tmp_path/images (see write_image_folder), 32 px, batch 4."""
    return compose_cfg(
        tmp_path,
        "data=imagefolder",
        f"data.root={tmp_path}/images",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=4",
        *overrides,
    )


def read_metrics(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def write_cifar10(root: Path, per_batch: int = 20) -> None:
    """CIFAR-10's python-pickle layout: 5 train batches and a test batch of dicts of numpy arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)


def write_image_folder(
    root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, size: int = 40, suffix: str = "png"
) -> None:
    """Random-pixel images in the ImageNet layout, as PNG or (suffix="jpg") JPEG files."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.{suffix}")


def write_broken_image(root: Path) -> Path:
    """A PNG that stops after its signature, in the train split of an image folder; returns its path."""
    path = root / "train" / "dog" / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return path


class PoisonWeights(L.Callback):
    """Test-only: turn every weight into NaN after optimizer step `at_step`."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class StepFile(L.Callback):
    """Test-only: after every optimizer step, write the step reached to `path` and wait `delay` seconds,
    so that a test can send a signal at a known point of a run in another process. With `in_validation`,
    the validation batches of the fit do so and the training steps only write their step."""

    def __init__(self, path: str, delay: float = 0.0, in_validation: bool = False):
        self.path, self.delay, self.in_validation = Path(path), delay, in_validation

    def on_train_start(self, trainer, pl_module):
        self.path.write_text("train start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.path.write_text(f"train {trainer.global_step}")
        if not self.in_validation:
            time.sleep(self.delay)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.in_validation and trainer.state.fn == "fit":
            self.path.write_text(f"validation {trainer.global_step} {batch_idx}")
            time.sleep(self.delay)


class SlowCheckpointWrite(L.Callback):
    """Test-only: every checkpoint write pauses `delay` seconds halfway (the bytes written, the file not
    yet renamed into place), after writing the file's name to `marker`: a test kills the run there."""

    def __init__(self, marker: str, delay: float):
        self.marker, self.delay = Path(marker), delay

    def setup(self, trainer, pl_module, stage):
        io = trainer.strategy.checkpoint_io
        assert isinstance(io, AtomicCheckpointIO)

        def paused(checkpoint, path, storage_options=None):
            def halfway(f):
                torch.save(checkpoint, f)
                f.flush()
                self.marker.write_text(str(path))
                time.sleep(self.delay)

            atomic_write(path, halfway)

        io.save_checkpoint = paused  # the same write as AtomicCheckpointIO's, paused halfway


class SeenItems(L.Callback):
    """Test-only: every training item the loader workers load, as `<epoch> <dataset index>` lines in
    `path`.<rank>. Set at the fit's start, before the workers start."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, pl_module):
        items = trainer.train_dataloader.dataset  # SeededItems
        items._draw = RecordedDraws(items, f"{self.path}.{trainer.global_rank}")


class RecordedDraws:
    """SeededItems._draw, each call recorded; picklable, for workers that are spawned."""

    def __init__(self, items, path: str):
        self.items, self.path = items, path

    def __call__(self, epoch: int, index: int):
        with open(self.path, "a") as f:
            f.write(f"{epoch} {index}\n")
        return type(self.items)._draw(self.items, epoch, index)


class SignalSelf(L.Callback):
    """Test-only: send `signal` to this process from the trainer hook `hook`: on_test_end (the evaluation
    after the fit), or on_train_batch_end at global step `at_step` (-1: never, for the other jobs of a sweep)."""

    def __init__(self, hook: str = "on_train_batch_end", signal: str = "SIGTERM", at_step: int | None = None):
        setattr(self, hook, self.send)
        self.signal, self.at_step = signal, at_step

    def send(self, trainer, *args, **kwargs):
        if self.at_step is None or trainer.global_step == self.at_step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def official_key_listing(name: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a released checkpoint, from tests/data/<name>_state_dict.tsv."""
    rows = (DATA_DIR / f"{name}_state_dict.tsv").read_text().splitlines()[1:]
    shapes = {}
    for row in rows:
        key, shape = row.split("\t")
        shapes[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return shapes


def official_state_dict(name):
    """Random tensors with the released keys and shapes (BatchNorm buffers included)."""
    state = {}
    for key, shape in official_key_listing(name).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape) * 0.05
    return state


def wandb_records(run_dir: Path, timeout: float = 60) -> list:
    """The records of a finished offline W&B run (<run_dir>/run-<id>.wandb), as wandb's protobuf messages.

    wandb's writer may still be appending when `wandb.finish` returns: the file is read again until it
    ends with the run's exit record (or `timeout` seconds have passed)."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_wandb_log(next(Path(run_dir).glob("*.wandb")).read_bytes())
        except DecodeError:  # read while a record was half written
            if time.monotonic() > deadline:
                raise
            records = []
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_wandb_log(data: bytes) -> list:
    """The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last) and a part of a record."""
    from wandb.proto import wandb_internal_pb2

    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, header = 32768, 7
    records, pos, pending = [], header, b""
    while pos + header <= len(data):
        if block - pos % block < header:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + header : pos + header + length]
        if kind == 0 or len(chunk) < length:  # zero fill at the end of the file, or a chunk still being written
            break
        pos += header + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_logged(records: list) -> dict:
    """What an offline run logged: {"history": {key: [value_json, ...]}, "artifacts": [artifact records],
    "run": the run record, "config": {key: value_json}}; a nested key is joined with "/"."""
    logged = {"history": {}, "artifacts": [], "run": None, "config": {}}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            for item in record.history.item:
                key = "/".join(item.nested_key) or item.key
                logged["history"].setdefault(key, []).append(item.value_json)
        elif kind == "artifact":
            logged["artifacts"].append(record.artifact)
        elif kind == "run":
            logged["run"] = record.run
        elif kind == "config":
            for item in record.config.update:
                logged["config"]["/".join(item.nested_key) or item.key] = item.value_json
    return logged
