"""Datasets as LightningDataModules (conf/data): for classification the embedded SHAPES, CIFAR-10/100 and
image folders; for segmentation the embedded SHAPES scenes, segmentation folders and ADE20K."""

from .base import ImageData
from .cifar import CIFARData
from .imagefolder import ImageFolderData
from .scenes import ShapesScenesData
from .segfolder import ADE20KData, SegmentationFolderData
from .shapes import ShapesData

__all__ = [
    "ADE20KData",
    "CIFARData",
    "ImageData",
    "ImageFolderData",
    "SegmentationFolderData",
    "ShapesData",
    "ShapesScenesData",
]
