from .datamodules import CIFARData, ImageClassificationData, ImageFolderData, ShapesData

__all__ = ["CIFARData", "ImageClassificationData", "ImageFolderData", "ShapesData"]
