from .datamodules import CIFARData, DataError, ImageClassificationData, ImageFolderData, ShapesData

__all__ = ["CIFARData", "DataError", "ImageClassificationData", "ImageFolderData", "ShapesData"]
