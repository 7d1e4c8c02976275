"""torchvision datasets read from --data-root: small files in each dataset's real on-disk
format, written here, go through torchvision's own readers and come out as [0, 1] float
images with int64 labels; a missing file says where to put what."""

import pickle
import struct

import numpy as np
import pytest
import torch

from gatfast.train import data

pytest.importorskip("torchvision")


def _idx(path, array: np.ndarray):
    """The IDX format of the MNIST files: magic (0, 0, dtype code 0x08 = ubyte, ndim), sizes, bytes."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def _write_mnist_like(root, folder, rng):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", 12), ("t10k", 5)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _idx(raw / f"{split}-images-idx3-ubyte", images)
        _idx(raw / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays["train"], arrays["t10k"]


def _write_cifar(root, rng, hundred):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir()
    label_key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10

    def batch(name, n):
        images, labels = rng.integers(0, 256, (n, 3 * 32 * 32)).astype(np.uint8), rng.integers(0, classes, n)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images, label_key: labels.tolist()}, f)
        return images, labels

    if hundred:
        train, test = batch("train", 9), batch("test", 4)
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    else:
        parts = [batch(f"data_batch_{i}", 2) for i in range(1, 6)]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test = batch("test_batch", 4)
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    return train, test


@pytest.fixture
def exists_only_integrity(monkeypatch):
    """CIFAR and SVHN check each file's md5 against the real release; files written here
    cannot match it, so the check becomes an existence check for these tests only."""
    import os
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn
    for module in (cifar, svhn):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_format(tmp_path, name, folder):
    (train_x, train_y), (test_x, test_y) = _write_mnist_like(tmp_path, folder, np.random.default_rng(0))
    d = data.load_dataset(name, tmp_path)
    assert (len(d.train), len(d.test), d.image_shape, d.num_classes) == (12, 5, (1, 28, 28), 10)
    assert data.SHAPES[name] == (d.image_shape, d.num_classes)
    x, y = d.train.tensors
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0], torch.as_tensor(train_x / 255.0, dtype=torch.float32))
    assert torch.equal(y, torch.as_tensor(train_y))
    assert torch.equal(d.test.tensors[1], torch.as_tensor(test_y))


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_format(tmp_path, exists_only_integrity, hundred):
    (train_x, train_y), (test_x, _) = _write_cifar(tmp_path, np.random.default_rng(1), hundred)
    d = data.load_dataset("cifar100" if hundred else "cifar10", tmp_path)
    assert d.image_shape == (3, 32, 32) and d.num_classes == (100 if hundred else 10)
    assert data.SHAPES[d.name] == (d.image_shape, d.num_classes)
    assert len(d.train) == len(train_y) and len(d.test) == len(test_x)
    x, y = d.train.tensors
    # CIFAR rows are channel planes (R, G, B) of 32x32: the loader must give (N, 3, 32, 32).
    torch.testing.assert_close(x, torch.as_tensor(train_x.reshape(-1, 3, 32, 32) / 255.0, dtype=torch.float32))
    assert torch.equal(y, torch.as_tensor(train_y))


def test_svhn_format(tmp_path, exists_only_integrity):
    from scipy.io import savemat
    rng = np.random.default_rng(2)
    images = {}
    for split, n in (("train", 7), ("test", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8)  # SVHN's (H, W, C, N)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)            # digit 0 is stored as 10
        y[0, 0] = 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        images[split] = (x, y)
    d = data.load_dataset("svhn", tmp_path)
    assert d.image_shape == (3, 32, 32) and (len(d.train), len(d.test)) == (7, 3)
    x, y = d.train.tensors
    expected = np.transpose(images["train"][0], (3, 2, 0, 1)) / 255.0
    torch.testing.assert_close(x, torch.as_tensor(expected, dtype=torch.float32))
    assert y[0] == 0 and torch.equal(y[1:], torch.as_tensor(images["train"][1][1:, 0], dtype=torch.int64))


@pytest.mark.parametrize("name,hint", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"),
                                       ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")])
def test_missing_files_say_where_to_put_what(tmp_path, name, hint):
    with pytest.raises(FileNotFoundError, match=f"{name}: no usable files under .*{hint}.*--download"):
        data.load_dataset(name, tmp_path)


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="dataset must be one of mnist5k, digits, mnist"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="pass data_root"):
        data.load_dataset("cifar10")
