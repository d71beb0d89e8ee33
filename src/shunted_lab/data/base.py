"""What every dataset shares: the LightningDataModule with its loaders, in-memory images, the
error a user's data raises, and images made displayable again."""

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ..exits import DataError
from .resumable import ResumableLoader, loader_seed, training_loader


class ImageData(L.LightningDataModule):
    """Shared loaders; subclasses build `train_set`, `val_set`, `test_set` in `setup`.

    `objective` says what a label is: a class per image (classification) or a class per pixel
    (segmentation: the label is an (H, W) map). Where the data knows a group for each evaluation
    image (SHAPES' object-size bins, an image folder's groups file) or pixel (SHAPES scenes' object-size
    bins), `group_names` lists the groups and the val/test items end with the group index (a map of
    them, -1 off any object): the module then also reports its score per group.
    """

    objective = "classification"
    num_classes: int
    group_names: list[str] | None = None
    shard_lengths: list[int] | None = None  # a training set of tar shards: their lengths (resumable.shard_window_order)
    shard_window = 8

    @property
    def class_names(self) -> list[str]:
        """A name per class index; a dataset that knows its names says so."""
        return [str(i) for i in range(self.num_classes)]

    def __init__(self, name: str, batch_size: int = 128, num_workers: int = 0, image_size: int = 224):
        super().__init__()
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.train_loader: ResumableLoader | None = None
        self.resume_position: dict | None = None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if train and len(dataset) < self.batch_size * world:
            # The train loader drops the last partial batch: such a run would take no optimizer step.
            per_device = f" over {world} devices" if world > 1 else ""
            raise DataError(
                f"data.batch_size={self.batch_size} is larger than the training split ({len(dataset)} images"
                f"{per_device}), so no optimizer step would run; set data.batch_size <= {len(dataset) // world}"
            )
        common = dict(
            collate_fn=self.collate(train),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
        if train:
            return training_loader(dataset, shard_lengths=self.shard_lengths, shard_window=self.shard_window, **common)
        sampler = None
        if world > 1:
            # Lightning's default would pad the last batch with repeats; every image counts once here.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        # The workers' base seed from a generator of the loader's own: the global RNG is the model's.
        return DataLoader(dataset, sampler=sampler, generator=torch.Generator().manual_seed(loader_seed()), **common)

    def collate(self, train: bool):
        """The loaders' collate_fn: None for PyTorch's default (items of one shape)."""
        return None

    def train_dataloader(self) -> DataLoader:
        self.train_loader = self._loader(self.train_set, train=True)
        if self.resume_position is not None:
            self.train_loader.load_state_dict(self.resume_position)
            self.resume_position = None
        return self.train_loader

    # The training loader's position in its epoch, in every checkpoint. Lightning also keeps the
    # position of a stateful loader, but gives it back only when it builds the loader after the
    # restore; the module's configure_optimizers builds it before (estimated_stepping_batches).
    def state_dict(self) -> dict:
        return {"train_loader": self.train_loader.state_dict()} if self.train_loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.resume_position = state.get("train_loader")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


class TensorImages(Dataset):
    """uint8 (N, 3, H, W) images in memory, a transform applied per item; `objects` (N, 3): each
    image's object centre row, column and half size in pixels, where the data knows them; `groups`
    (N,): each image's group index, which then ends every item."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform,
        objects: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ):
        self.images, self.labels, self.transform, self.objects, self.groups = images, labels, transform, objects, groups

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        item = self.transform(self.images[i]), int(self.labels[i])
        return item if self.groups is None else (*item, int(self.groups[i]))


def displayable(image: torch.Tensor) -> np.ndarray:
    """A normalized (3, H, W) image stretched to [0, 1], HWC."""
    image = image.float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return image.permute(1, 2, 0).numpy()
