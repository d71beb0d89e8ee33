"""The shard reader (data.format=shards): WebDataset tar shards as a map-style dataset, read with `wids`.

The layout (layout.py) is the one ImageNet is shipped in on the Hugging Face hub
(`timm/imagenet-1k-wds`) and the one `python -m shunted_lab.data.readers.pack` writes. A
`classes.txt` beside `_info.json` names the classes, one per line (pack writes one; the hub's has none).

Why `wids`: it reads a tar shard as an indexed, map-style view (`IndexedTarSamples`: the tar's headers
indexed once, then each sample read by its position), so the project's resumable sampler and
per-item seeds (resumable.py) work on shards unchanged: a mid-epoch resume skips batches by index, as
for folders. Its downloaders (`wids_dl`: curl for http(s), the cloud CLIs for s3:// and gs://, and
`pipe:` commands) fetch a remote shard whole into `data.shard_cache` before it is read, once per
machine. The streaming readers (webdataset's iterable pipeline, timm's `wds/`) cannot skip to a
step; litdata needs its own format, not the shards as published.

Reading by index stays fast only while the samples of a few shards are read together, so the
training order (resumable.ResumableSampler) shuffles the shards, then the samples within each run of
`data.shuffle_shards` shards, as webdataset's shuffle buffer does; the published shards are
pre-shuffled, and pack shuffles too.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import itertools
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch.utils.data import Dataset

from ...exits import ConfigError, DataError
from .layout import CLASSES_FILE, IMAGE_MEMBERS, INFO_FILE, LABEL_MEMBER, SPLIT_NAMES

if TYPE_CHECKING:
    from wids.wids import IndexedTarSamples

log = logging.getLogger(__name__)

OPEN_SHARDS = 16  # per process: the shards of a shuffle window, and the next
# wids and braceexpand are imported where shards are read, not with this module: an image folder needs
# neither, and a machine without them (the lent GPU machine) still trains on folders.
HTTP = ("http", "https", "ftp", "ftps")
CURL = "curl -f -s -L '{url}' -o '{local}'"  # fails on an HTTP error rather than saving the error page as the file


def is_remote(location: str) -> bool:
    return location.startswith("pipe:") or urlparse(location).scheme not in ("", "file")


def joined(root: str, name: str) -> str:
    """A shard's location: `name` itself where it is absolute (a path or URL), else under `root`."""
    if is_remote(name) or name.startswith("/"):
        return name
    return f"{root.rstrip('/')}/{name}" if is_remote(root) else str(Path(root) / name)


def fetched(location: str, cache: Path) -> str:
    """A local path to `location`: itself where it is local, else a copy downloaded (whole, atomically,
    once per machine: other processes wait on a lock) into `cache`."""
    if not is_remote(location):
        return location
    from wids.wids_dl import ULockFile, default_cmds, download_file

    cache.mkdir(parents=True, exist_ok=True)
    local = cache / Path(urlparse(location).path).name
    with ULockFile(f"{local}.lock"):
        if not local.exists():
            tmp = local.with_name(f".{local.name}.tmp{os.getpid()}")
            try:
                download_file(location, str(tmp), handlers=default_cmds | dict.fromkeys(HTTP, CURL))
                os.replace(tmp, local)
            except (AssertionError, OSError, ValueError) as e:  # wids asserts the download command's status
                raise DataError(f"cannot download shard {location}: {e}") from e
            finally:
                tmp.unlink(missing_ok=True)
    return str(local)


@dataclass
class ShardSet:
    """One split's shards: where each is and how many samples it holds."""

    locations: list[str]
    lengths: list[int]

    def __len__(self) -> int:
        return sum(self.lengths)


def info_cache(root: str, cache: Path) -> Path:
    """Where a remote root's _info.json and classes.txt are kept (shards of several roots share the cache)."""
    return cache / "info" / hashlib.sha1(root.encode()).hexdigest()[:16]


def read_info(root: str, cache: Path) -> dict | None:
    location = joined(root, INFO_FILE)
    if is_remote(location):
        try:
            location = fetched(location, info_cache(root, cache))
        except DataError:
            return None
    try:
        return json.loads(Path(location).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.root={root!r}: {INFO_FILE} cannot be read: {e}") from e


def shard_set(root: str, info: dict | None, split: str, pattern, cache: Path) -> ShardSet:
    """The split's shards: `pattern` (a brace pattern or a list, relative to root) or else the info's."""
    listed = {}
    for name in SPLIT_NAMES[split]:
        entry = (info or {}).get("splits", {}).get(name)
        if entry:
            listed = dict(zip(entry["filenames"], entry["shard_lengths"], strict=True))
            break
    if pattern is None and not listed:
        raise ConfigError(
            f"data.root={root!r} has no {INFO_FILE} listing a {'/'.join(SPLIT_NAMES[split])} split; "
            "write the shards with `python -m shunted_lab.data.readers.pack`, "
            f"or give data.{split}_shards (a brace pattern)"
        )
    from braceexpand import braceexpand

    names = (
        list(listed)
        if pattern is None
        else [n for p in ([pattern] if isinstance(pattern, str) else pattern) for n in braceexpand(p)]
    )
    locations = [joined(root, name) for name in names]
    for location in locations:
        check_local_shard(location)
    lengths = [listed[n] if n in listed else count_samples(loc, cache) for n, loc in zip(names, locations, strict=True)]
    return ShardSet(locations, lengths)


def check_local_shard(location: str) -> None:
    """A missing or cut-off local shard, before training (a tar is a whole number of 512-byte blocks)."""
    if is_remote(location):
        return
    path = Path(location)
    if not path.is_file():
        raise ConfigError(f"shard {location} is missing")
    if path.stat().st_size % 512:
        raise ConfigError(f"shard {location} is truncated (its size is not a whole number of tar blocks)")


def count_samples(location: str, cache: Path) -> int:
    from wids.wids import IndexedTarSamples

    log.info("counting the samples of %s (not listed in %s)", location, INFO_FILE)
    samples = IndexedTarSamples(path=fetched(location, cache))
    try:
        return len(samples)
    finally:
        samples.close()


def read_classes(root: str, info: dict | None, num_classes: int | None, cache: Path) -> list[str]:
    """The class names: classes.txt, else indices for data.num_classes or the info's num_classes."""
    location = joined(root, CLASSES_FILE)
    try:
        names = Path(fetched(location, info_cache(root, cache))).read_text().splitlines()
    except (DataError, FileNotFoundError):
        names = None
    count = num_classes or (info or {}).get("num_classes")
    if names is None and count is None:
        raise ConfigError(f"data.root={root!r} has no {CLASSES_FILE}: set data.num_classes (1000 for ImageNet-1k)")
    if names is not None and count is not None and len(names) != count:
        raise ConfigError(f"data.num_classes={count} but {location} names {len(names)} classes")
    return names or [str(i) for i in range(count)]


class TarShards(Dataset):
    """The samples of a ShardSet by global index, each read as (image bytes, class index, name) and
    handed to `prepare` (a pipeline's item: pipelines.py); the name, `<shard>:<key>`,
    is for errors. A sample that cannot be read or prepared (its shard missing or cut off, no `cls`
    or image member, an image that does not decode) is a DataError naming the shard; with
    `skip_bad` it is replaced by the next good sample of the set, and counted (`skipped`, shared by
    the loader workers) and warned about once per shard and process. The replacement depends on the
    index alone, so a resumed run reads what the uninterrupted one read."""

    def __init__(self, shards: ShardSet, cache: Path, prepare, skip_bad: bool = False):
        self.shards, self.cache, self.prepare, self.skip_bad = shards, cache, prepare, skip_bad
        self.starts = [0, *itertools.accumulate(shards.lengths)]
        self.open: dict[int, IndexedTarSamples] = {}  # per process, least recently used first
        self.unreadable: dict[int, str] = {}  # shard: why, so that it is not opened again
        self.warned: set[int] = set()
        self.skipped = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, index: int):
        for candidate in range(index, index + len(self)):
            try:
                return self.prepare(*self.read(candidate % len(self)))
            except DataError as e:
                if not self.skip_bad:
                    raise
                self.skipped += 1
                shard = self.shard_of(candidate % len(self))
                if shard not in self.warned:
                    self.warned.add(shard)
                    log.warning("skipping: %s (further bad samples of this shard are skipped silently)", e)
        raise DataError(f"no sample of the {len(self.shards.lengths)} shards from {self.shards.locations[0]} is good")

    def shard_of(self, index: int) -> int:
        return bisect.bisect_right(self.starts, index) - 1

    def read(self, index: int) -> tuple[bytes, int, str]:
        shard = self.shard_of(index)
        location = self.shards.locations[shard]
        samples = self._samples(shard)
        inner = index - self.starts[shard]
        error = None
        if inner >= len(samples):
            error = f"shard {location} holds {len(samples)} samples, fewer than the {self.shards.lengths[shard]} listed"
        else:
            sample = samples[inner]
            name = f"{location}:{sample['__key__']}"
            image = next((sample[suffix] for suffix in IMAGE_MEMBERS if suffix in sample), None)
            label = sample.get(f".{LABEL_MEMBER}")
            if label is None or image is None:
                missing = LABEL_MEMBER if label is None else f"image ({', '.join(IMAGE_MEMBERS)})"
                error = f"sample {sample['__key__']} of shard {location} has no {missing} member"
            else:
                try:
                    return image.getvalue(), int(label.getvalue()), name
                except ValueError:
                    error = f"sample {sample['__key__']} of shard {location} has a cls that is not a class index"
        raise DataError(error)

    def _samples(self, shard: int) -> IndexedTarSamples:
        if shard in self.unreadable:
            raise DataError(self.unreadable[shard])
        if shard in self.open:
            self.open[shard] = self.open.pop(shard)  # most recently used last
            return self.open[shard]
        location = self.shards.locations[shard]
        from wids.wids import IndexedTarSamples

        try:
            samples = IndexedTarSamples(path=fetched(location, self.cache))
            end = max((offset + 512 + size for _, offset, size in samples.reader.by_index), default=0)
            if end > len(samples.reader.mmapped_file):
                samples.close()
                raise DataError(f"shard {location} is truncated")
        except (DataError, OSError, ValueError, struct.error) as e:
            self.unreadable[shard] = str(e) if isinstance(e, DataError) else f"cannot read shard {location}: {e}"
            raise DataError(self.unreadable[shard]) from e
        self.open[shard] = samples
        if len(self.open) > OPEN_SHARDS:
            self.open.pop(next(iter(self.open))).close()
        return samples

    def __getstate__(self) -> dict:
        return {**self.__dict__, "open": {}}  # a loader worker opens its own


class ShardReader:
    """A classification dataset stored as tar shards under `root` (a folder or URL): its classes, its
    splits as TarShards of a pipeline's items, and a sample of its images for sizing. `_info.json`
    lists the shards, or `train_shards`/`val_shards` brace patterns name them; remote shards are
    downloaded into `shard_cache`; `num_classes`, where set, is checked against the data (and names
    the classes of shards that come without a classes.txt). With `skip_bad`, a bad sample is
    skipped when it is met, and counted."""

    group_names = None  # a groups file lists files; shards have none

    def __init__(self, root: str, skip_bad: bool, num_classes: int | None, train_shards, val_shards, shard_cache: str):
        self.root, self.skip_bad, self.cache = root, skip_bad, Path(shard_cache)
        info = read_info(root, self.cache)
        self.shards = {
            split: shard_set(root, info, split, pattern, self.cache)
            for split, pattern in (("train", train_shards), ("val", val_shards))
        }
        self.classes = read_classes(root, info, num_classes, self.cache)
        self.shard_lengths = self.shards["train"].lengths  # the training order's shard windows (resumable.py)
        self.splits: dict[str, TarShards] = {}

    def split(self, split: str, item) -> TarShards:
        self.splits[split] = TarShards(self.shards[split], self.cache, item, self.skip_bad)
        return self.splits[split]

    def sample_files(self, count: int = 32) -> list:
        """The first samples of the first training shard, as file objects."""
        first = TarShards(self.shards["train"], self.cache, lambda data, *_: io.BytesIO(data))
        return [first[i] for i in range(min(count, self.shards["train"].lengths[0]))]

    def report(self) -> None:
        for split, dataset in self.splits.items():
            if int(dataset.skipped):
                log.warning("skipped %d bad %s samples of the shards so far", int(dataset.skipped), split)
