"""The tar-shard layout's names, shared by the reader (shards.py) and the writer (pack.py); torch-free,
so that the writer starts without loading torch.

The layout is `timm/imagenet-1k-wds`'s: `<name>-train-0000.tar ...` and `<name>-validation-0000.tar ...`,
each sample a `<key>.<image type>` and a `<key>.cls` (the class index as text); `_info.json` lists each
split's shard files and sample counts; `classes.txt`, where present, names the classes in index order.
"""

INFO_FILE, CLASSES_FILE, SKIPPED_FILE = "_info.json", "classes.txt", "skipped.txt"
# Our split: the name the writer gives it, then every name a reader accepts for it in _info.json.
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val")}
# An image file's suffix: its member's name in a sample (a JPEG is always `.jpg`).
IMAGE_MEMBERS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}
LABEL_MEMBER = "cls"


def published_split(split: str) -> str:
    """The name a split is written under (`val` -> `validation`)."""
    return SPLIT_NAMES[split][0]
