"""The two storage layouts' rules, shared by the readers (folder.py, shards.py) and the writer that turns
one into the other (pack.py); torch-free, so that the writer starts without loading torch.

An image folder is in ImageNet's layout: `train/<class>/<image>` and `val/<class>/<image>`, the same
class folders in both, each holding an image (`folder_classes`).

The shards' layout is `timm/imagenet-1k-wds`'s: `<name>-train-0000.tar ...` and `<name>-validation-0000.tar ...`,
each sample a `<key>.<image type>` and a `<key>.cls` (the class index as text); `_info.json` lists each
split's shard files and sample counts; `classes.txt`, where present, names the classes in index order.
"""

from pathlib import Path

INFO_FILE, CLASSES_FILE, SKIPPED_FILE = "_info.json", "classes.txt", "skipped.txt"
# Our split: the name the writer gives it, then every name a reader accepts for it in _info.json.
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val")}
# An image file's suffix: its member's name in a sample (a JPEG is always `.jpg`).
IMAGE_MEMBERS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}
LABEL_MEMBER = "cls"


def published_split(split: str) -> str:
    """The name a split is written under (`val` -> `validation`)."""
    return SPLIT_NAMES[split][0]


def folder_classes(root: Path, name: str) -> list[str]:
    """The class names of an image folder in ImageNet's layout, sorted; ValueError otherwise, a line that
    begins with `name` (how the user gave `root`)."""
    found = {}
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise ValueError(f"{name} has no {split}/ folder; expected {split}/<class>/<image> (ImageNet layout)")
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        empty = [c for c in classes if not any(f.is_file() for f in (folder / c).iterdir())]
        if not classes or empty:
            what = f"empty class folders {empty[:5]}" if classes else "no class folders"
            raise ValueError(f"{name}: {split}/ has {what}; every class needs at least one image")
        found[split] = classes
    train, val = found["train"], found["val"]
    if train != val:
        raise ValueError(
            f"{name}: train/ and val/ hold different classes (only in train: {sorted(set(train) - set(val))[:5]}, "
            f"only in val: {sorted(set(val) - set(train))[:5]})"
        )
    return train
