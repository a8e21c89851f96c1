"""Data for accuracy, wherever it is kept: image folders (class folders, a flat folder with a labels file, the
ImageNet val layout with the devkit or Kaggle labels), Hugging Face datasets and WebDataset shards, as one
`ImageList` of samples; decoding (`loading`) and the decoded-crop cache (`cache`) work the same for all."""

from tomebench.data.folders import IMAGE_EXTENSIONS, discover
from tomebench.data.images import ImageList, Source, balanced_subset, first_readable
from tomebench.data.loading import UNREADABLE, DeviceNormalize, ImageFiles, eval_transform, make_loader, to_rgb
from tomebench.data.sources import open_data

__all__ = [
    "IMAGE_EXTENSIONS",
    "UNREADABLE",
    "DeviceNormalize",
    "ImageFiles",
    "ImageList",
    "Source",
    "balanced_subset",
    "discover",
    "eval_transform",
    "first_readable",
    "make_loader",
    "open_data",
    "to_rgb",
]
