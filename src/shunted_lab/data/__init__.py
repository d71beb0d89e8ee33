"""Datasets as LightningDataModules (conf/data): for classification the embedded SHAPES, CIFAR-10/100 and
image folders (or their tar shards); for segmentation the embedded SHAPES scenes, segmentation folders
and ADE20K.

Each is imported when first named, so that a tool of this package that needs none of them
(`python -m shunted_lab.data.readers.pack`) starts without loading torch and timm.
"""

import importlib

MODULES = {
    "ADE20KData": "segfolder",
    "CIFARData": "cifar",
    "ImageData": "base",
    "ImageFolderData": "imagefolder",
    "SegmentationFolderData": "segfolder",
    "ShapesData": "shapes",
    "ShapesScenesData": "scenes",
}
__all__ = sorted(MODULES)


def __getattr__(name: str):
    if name not in MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{MODULES[name]}", __name__), name)
