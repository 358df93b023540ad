"""Datasets: a registry of named image datasets, decoded-once tensors and batched augmentation."""

from djepa_bench.data.batches import iterate_batches, num_batches, split_to_device
from djepa_bench.data.cache import default_cache_dir, default_data_root
from djepa_bench.data.sources import DATASETS, DatasetSpec, dataset_names, get_spec, load_dataset
from djepa_bench.data.split import ImageSplit

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageSplit",
    "dataset_names",
    "default_cache_dir",
    "default_data_root",
    "get_spec",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "split_to_device",
]
