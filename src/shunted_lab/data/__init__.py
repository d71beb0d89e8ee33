"""Datasets as LightningDataModules: the embedded SHAPES, CIFAR-10/100 and image folders (conf/data)."""

from .base import DataError, ImageClassificationData
from .cifar import CIFARData
from .imagefolder import ImageFolderData
from .shapes import ShapesData

__all__ = ["CIFARData", "DataError", "ImageClassificationData", "ImageFolderData", "ShapesData"]
