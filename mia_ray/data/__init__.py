"""Datasets: the paper's victim/shadow splits and loaders for every pool."""

from mia_ray.data.loaders import ArrayDataset, check_available, expected_files, load_pool
from mia_ray.data.splits import Split, paper_split, split_for

__all__ = [
    "ArrayDataset",
    "Split",
    "check_available",
    "expected_files",
    "load_pool",
    "paper_split",
    "split_for",
]
