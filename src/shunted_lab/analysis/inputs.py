"""The images an analysis looks at: the first N of a split, or every image of a folder."""

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2


@dataclass
class AnalysisInputs:
    images: torch.Tensor  # (N, 3, H, W), normalized as the model expects
    labels: torch.Tensor  # (N,); -1 where unknown (or not one class: a segmentation's label maps)
    queries: torch.Tensor  # (N, 2) input pixel (row, column) whose attention is drawn, per image
    query_kind: str  # what the query points are, e.g. "object centre"
    class_names: list[str] | None = None


def centre_queries(n: int, hw: tuple[int, int]) -> torch.Tensor:
    return torch.tensor([[hw[0] / 2, hw[1] / 2]]).expand(n, 2).clone()


def from_split(datamodule, split: str, num_images: int) -> AnalysisInputs:
    """The split's first images, as its evaluation transform gives them; SHAPES' object centres as queries."""
    datamodule.setup("validate" if split == "val" else "test")
    dataset = getattr(datamodule, f"{split}_set")
    n = min(num_images, len(dataset))
    items = [dataset[i] for i in range(n)]  # (image, label) or (image, label, group); a label may be a map
    images = torch.stack([item[0] for item in items])
    labels = [item[1] if isinstance(item[1], int) else -1 for item in items]
    objects = getattr(dataset, "objects", None)
    names = datamodule.class_names
    if objects is not None:
        return AnalysisInputs(images, torch.tensor(labels), objects[:n, :2].clone(), "object centre", names)
    return AnalysisInputs(images, torch.tensor(labels), centre_queries(n, images.shape[-2:]), "image centre", names)


def from_folder(folder: Path, datamodule, num_images: int) -> AnalysisInputs:
    """Every image file in `folder` (sorted, at most num_images), resized to the data's image size and
    normalized by its evaluation transform; labels are unknown (-1), queries at the image centre."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)[:num_images]
    if not files:
        raise FileNotFoundError(f"analysis.images={str(folder)!r} holds no image files ({', '.join(IMG_EXTENSIONS)})")
    datamodule.setup("validate")
    transform = datamodule.val_set.transform
    size = datamodule.image_size
    images = []
    for path in files:
        with Image.open(path) as f:
            picture = f.convert("RGB").resize((size, size), Image.BICUBIC)
        try:  # timm's transforms take PIL images; SHAPES' take uint8 tensors
            image = transform(picture)
        except (TypeError, AttributeError):
            image = transform(v2.functional.pil_to_tensor(picture))
        images.append(image)
    images = torch.stack(images)
    names = datamodule.class_names
    return AnalysisInputs(
        images, torch.full((len(files),), -1), centre_queries(len(files), images.shape[-2:]), "image centre", names
    )
