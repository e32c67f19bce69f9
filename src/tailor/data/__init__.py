"""Datasets and augmentation: digits, synthetic, CIFAR-10/100, ImageFolder trees (see README.md here).

Bottom layer: imports only torch, numpy and (lazily) scikit-learn and Pillow.
"""

from tailor.data.base import TensorImageDataset, channel_stats
from tailor.data.cifar import CIFAR_STATS, SafeUnpickler, cifar, safe_load_pickle
from tailor.data.digits import digits, stratified_split
from tailor.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset, image_folder, load_image
from tailor.data.registry import DATASETS, default_augmentation, list_datasets, load_dataset
from tailor.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_MEAN,
    SYNTHETIC_STD,
    SyntheticBatch,
    generate_synthetic,
    synthetic,
)
from tailor.data.transforms import (
    BatchAugmentation,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    augment_batch,
    normalize,
    random_crop_batch,
    random_flip_batch,
    to_float01,
)

__all__ = [
    "CIFAR_STATS",
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_MEAN",
    "SYNTHETIC_STD",
    "BatchAugmentation",
    "Compose",
    "ImageFolderDataset",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "SafeUnpickler",
    "SyntheticBatch",
    "TensorImageDataset",
    "augment_batch",
    "channel_stats",
    "cifar",
    "default_augmentation",
    "digits",
    "generate_synthetic",
    "image_folder",
    "list_datasets",
    "load_dataset",
    "load_image",
    "normalize",
    "random_crop_batch",
    "random_flip_batch",
    "safe_load_pickle",
    "stratified_split",
    "synthetic",
    "to_float01",
]
