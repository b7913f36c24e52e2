"""Data layer: decode images, read raw datasets, pack them into shards, sample few-shot tasks."""

from .episodes import EpisodeSampler, split_by_fraction, split_classes
from .images import (
    ImageError,
    decode_image,
    load_image,
    load_image_bytes,
    preprocess_array,
    to_tensor,
    to_uint8,
)
from .shards import ShardError, TaskDataset, load_packed, pack_shards
from .download import OFFICIAL_EVALUATION_URL, OFFICIAL_URL, download_omniglot
from .sources import (
    ClassImages,
    EncodedImage,
    read_folder_tree,
    read_omniglot_npz,
    read_omniglot_zip,
    read_source,
    write_omniglot_subset,
)

__all__ = [
    "ClassImages",
    "EncodedImage",
    "EpisodeSampler",
    "ImageError",
    "OFFICIAL_EVALUATION_URL",
    "OFFICIAL_URL",
    "ShardError",
    "TaskDataset",
    "decode_image",
    "download_omniglot",
    "load_image",
    "load_image_bytes",
    "load_packed",
    "pack_shards",
    "preprocess_array",
    "read_folder_tree",
    "read_omniglot_npz",
    "read_omniglot_zip",
    "read_source",
    "split_by_fraction",
    "split_classes",
    "to_tensor",
    "to_uint8",
    "write_omniglot_subset",
]
