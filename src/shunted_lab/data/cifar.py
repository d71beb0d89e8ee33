"""CIFAR-10/100 from the python-pickle batches of the official download."""

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets
from torchvision.transforms import v2

from ..config import check_choice
from .base import ImageData, TensorImages


class NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickled dicts of numpy arrays; refuse any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                batch = NumpyOnlyUnpickler(f, encoding="bytes").load()
            images.append(torch.as_tensor(np.asarray(batch[b"data"], dtype=np.uint8)).view(-1, 3, 32, 32))
            labels.append(torch.as_tensor(batch[label_key]))
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(f"{path} is not a readable CIFAR python batch: {e}") from e
    return torch.cat(images), torch.cat(labels)


class CIFARData(ImageData):
    """CIFAR-10/100 from the python-pickle batches; val is a fixed held-out part of train."""

    LAYOUT = {  # folder, train files, test files, label key
        10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
        100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
    }
    MEAN_STD = {
        10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    }

    def __init__(self, root: str, num_classes: int = 10, download: bool = False, val_fraction: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        check_choice("data.num_classes", num_classes, self.LAYOUT)
        self.root, self.num_classes, self.download, self.val_fraction = Path(root), num_classes, download, val_fraction
        folder, train_files, test_files, _ = self.LAYOUT[num_classes]
        missing = [f for f in train_files + test_files if not (self.root / folder / f).is_file()]
        if missing and not download:
            raise FileNotFoundError(
                f"data.root={str(self.root)!r} has no CIFAR-{num_classes} files ({folder}/{missing[0]} missing); "
                "point data.root at the folder holding it, or set data.download=true"
            )

    def prepare_data(self) -> None:
        if self.download:
            (datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100)(self.root, download=True)

    def setup(self, stage: str | None = None) -> None:
        folder, train_files, test_files, label_key = self.LAYOUT[self.num_classes]
        mean, std = self.MEAN_STD[self.num_classes]
        resize = [v2.Resize(self.image_size, antialias=True)] if self.image_size != 32 else []
        tail = [*resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        train_tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *tail])
        eval_tf = v2.Compose(tail)
        images, labels = read_cifar_batches([self.root / folder / f for f in train_files], label_key)
        # The same split for every run and seed, so that runs compare on the same validation images.
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
        num_val = int(len(order) * self.val_fraction)
        self.train_set = TensorImages(images[order[num_val:]], labels[order[num_val:]], train_tf)
        self.val_set = TensorImages(images[order[:num_val]], labels[order[:num_val]], eval_tf)
        self.test_set = TensorImages(
            *read_cifar_batches([self.root / folder / f for f in test_files], label_key), eval_tf
        )
