"""The training loader that resumes mid-epoch exactly where a checkpoint left it.

A run stopped at step k and resumed must train on the batches an uninterrupted run would have
trained on, with the same augmentations. Three things make that so:

- the order is a shuffle of (seed, epoch), this device's share of it (`ResumableSampler`, a
  DistributedSampler, so Lightning leaves it in place under DDP), and not the global RNG's state.
  On tar shards (data/readers/shards.py) it shuffles the shards, then the samples within each run of a few
  shards (`shard_window_order`), so that reading by index stays within a few open shards;
- the loader knows its position in the epoch (`state_dict`), which the datamodule keeps in every
  checkpoint and gives back (`load_state_dict`) before the epoch's iterator is made
  (data/base.py): a resume skips the batches of the epoch already trained on, by index, without
  loading them;
- each item's random augmentation is drawn from a generator seeded by (seed, epoch, index)
  (`SeededItems`), so it is the same whichever worker loads it and however the run was split.

The model's own randomness (drop path) is the global RNG's, saved in the checkpoint
(training/callbacks.RandomStateCheckpoint).
"""

import itertools
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def loader_seed() -> int:
    """The run's seed as Lightning's own distributed sampler takes it (set by seed_everything)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def shard_window_order(lengths: list[int], window: int, generator: torch.Generator) -> list[int]:
    """The samples of shards of these `lengths` (numbered shard after shard): the shards shuffled,
    then the samples of each run of `window` shards shuffled together."""
    starts = [0, *itertools.accumulate(lengths)]
    shards = torch.randperm(len(lengths), generator=generator).tolist()
    order = []
    for first in range(0, len(shards), window):
        run = torch.cat([torch.arange(starts[s], starts[s + 1]) for s in shards[first : first + window]])
        order += run[torch.randperm(len(run), generator=generator)].tolist()
    return order


class ResumableSampler(DistributedSampler):
    """This device's share of a (seed, epoch) shuffle, yielding (epoch, index) keys for SeededItems.
    `resume_at(epoch, batches)`: the iterator of that epoch leaves out its first `batches` batches
    (Lightning counts a checkpoint taken after an epoch's last batch as that epoch done: the next
    epoch's iterator then skips nothing). With `shard_lengths` (a dataset of tar shards) the shuffle
    is `shard_window_order`'s over `shard_window` shards; the devices' shares are taken from it as
    DistributedSampler takes them from its permutation."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, shard_lengths=None, shard_window: int = 8):
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.shard_lengths, self.shard_window = shard_lengths, shard_window
        self.resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches: int) -> None:
        self.set_epoch(epoch)
        self.resume = epoch, batches

    def batches_to_skip(self) -> int:
        """How many batches the next iterator leaves out: those of the resume point's epoch already trained on."""
        return self.resume[1] if self.resume is not None and self.resume[0] == self.epoch else 0

    def __iter__(self):
        skip, self.resume = self.batches_to_skip() * self.batch_size, None
        order = super().__iter__() if self.shard_lengths is None else self._shard_share()
        for index in itertools.islice(order, skip, None):
            yield self.epoch, index

    def _shard_share(self) -> list[int]:
        order = shard_window_order(
            self.shard_lengths, self.shard_window, torch.Generator().manual_seed(self.seed + self.epoch)
        )
        order += order[: self.total_size - len(order)]  # padded to a whole share per device, as DistributedSampler pads
        return order[self.rank : self.total_size : self.num_replicas]


class SeededItems(Dataset):
    """A training set whose item (epoch, index) is drawn with the CPU generators (torch, random,
    numpy: what torchvision's and timm's transforms use) seeded by (seed, epoch, index). The
    caller's generator states are put back afterwards: the model's dropout never sees the data's draws.
    The DataLoader fetches a batch's items in one `__getitems__`, which saves and restores those
    states once per batch: numpy's alone cost ~150 us an item, 7% of the default run's step."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            return [self._draw(epoch, index) for epoch, index in keys]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])

    def _draw(self, epoch: int, index: int):
        item_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        torch.default_generator.manual_seed(item_seed)
        random.seed(item_seed)
        np.random.seed(item_seed)
        return self.dataset[index]


class ResumableLoader(DataLoader):
    """A DataLoader over SeededItems with a ResumableSampler that remembers how far into the epoch it
    has handed out batches (`state_dict`), and starts there again (`load_state_dict`). The methods
    are Lightning's stateful-loader interface, so Lightning does not warn that a mid-epoch resume
    replays the epoch; the datamodule is what saves and restores the position (data/base.py)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_handed = 0

    def __iter__(self):
        self.batches_handed = self.sampler.batches_to_skip()
        for batch in super().__iter__():
            self.batches_handed += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": self.batches_handed}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume_at(state["epoch"], state["batches"])


def training_loader(dataset: Dataset, batch_size: int, shard_lengths=None, shard_window: int = 8, **kwargs):
    seed = loader_seed()
    return ResumableLoader(
        SeededItems(dataset, seed),
        batch_size=batch_size,
        sampler=ResumableSampler(dataset, batch_size, seed, shard_lengths, shard_window),
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),  # the workers' base seed, not drawn from the global RNG
        **kwargs,
    )
