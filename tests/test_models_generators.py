"""Classifiers and perturbation generators: shapes, bounds, normalisation, bad arguments."""

import pytest
import torch

from gatfast.gat import generators
from gatfast.gat.generators import PerturbationGenerator
from gatfast.train import models


@pytest.mark.parametrize(
    "name,kwargs,shape,params",
    [
        ("small_cnn", {}, (2, 1, 28, 28), 694_402),
        ("small_cnn", dict(in_channels=3, image_size=32, mean=models.CIFAR_MEAN, std=models.CIFAR_STD),
         (2, 3, 32, 32), 886_978),
        ("cert_cnn", {}, (2, 1, 28, 28), 550_406),
        ("cert_cnn", dict(image_size=8), (2, 1, 8, 8), 38_406),
        ("preact_resnet18", {}, (2, 3, 32, 32), 11_172_170),
        ("wide_resnet", {}, (2, 3, 32, 32), 36_479_194),
    ],
)
def test_models_classify_images_in_the_unit_box(name, kwargs, shape, params):
    torch.manual_seed(0)
    model = models.build_model(name, **kwargs).eval()
    x = torch.rand(shape)
    out = model(x)
    assert out.shape == (shape[0], 10) and torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) == params  # the published architectures' sizes
    assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()


@pytest.mark.parametrize("name", ["small_cnn", "cert_cnn"])
def test_the_certifiable_models_read_as_their_chain(name):
    """certify bounds model.as_sequential(): it must be the same function as the model."""
    torch.manual_seed(1)
    model = models.build_model(name).eval()
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(model.as_sequential()(x), model(x))


def test_normalization_happens_inside_the_model():
    model = models.SmallCNN().eval()
    x = torch.rand(3, 1, 28, 28)
    inner = model.classifier(model.features((x - 0.1307) / 0.3081))
    torch.testing.assert_close(model(x), inner)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="model must be one of small_cnn, cert_cnn, preact_resnet18, wide_resnet"):
        models.build_model("vgg")
    with pytest.raises(ValueError, match="depth must be 6n"):
        models.WideResNet(depth=27)
    with pytest.raises(ValueError, match="std must be > 0"):
        models.Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="image_size must be a multiple of 4"):
        models.SmallCNN(image_size=30)


@pytest.mark.parametrize("input_kind", generators.INPUTS)
@pytest.mark.parametrize("bound", generators.BOUNDS)
@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 3, 32, 32)])
def test_generator_output_respects_its_bound(input_kind, bound, shape):
    torch.manual_seed(1)
    gen = PerturbationGenerator(shape[1], eps=0.3, bound=bound, input=input_kind)
    with torch.no_grad():  # make the raw output large, so that only the bound keeps it small
        gen.tail.weight.mul_(1000)
    x, g = torch.rand(shape), torch.randn(shape)
    delta = gen(x, g)
    assert delta.shape == shape and torch.isfinite(delta).all()
    flat = delta.flatten(1)
    if bound == "linf":
        assert flat.abs().max() <= 0.3
    elif bound == "l2":
        assert (flat.norm(dim=1) <= 0.3 * (1 + 1e-5)).all()
    else:
        assert flat.abs().max() > 0.3  # penalty: no hard bound, the loss's c_g term keeps it small


@pytest.mark.parametrize("bound", generators.BOUNDS)
def test_generator_trains_by_backprop(bound):
    gen = PerturbationGenerator(1, eps=0.3, bound=bound, input="image+grad")
    x, g = torch.rand(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    gen(x, g).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gen.parameters())
    assert gen.head.weight.grad.abs().sum() > 0


def test_gradient_input_is_scale_invariant():
    gen = PerturbationGenerator(1, eps=0.3, input="grad")
    x, g = torch.rand(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(gen(x, g), gen(x, g * 1e-6))
    zero = gen(x, torch.zeros_like(g))
    assert torch.isfinite(zero).all()


def test_bad_generator_arguments():
    with pytest.raises(ValueError, match="bound must be one of linf, l2, penalty; got 'l1'"):
        PerturbationGenerator(1, 0.3, bound="l1")
    with pytest.raises(ValueError, match="input must be one of grad, image, image\\+grad"):
        PerturbationGenerator(1, 0.3, input="noise")
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        PerturbationGenerator(1, 0.0)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        PerturbationGenerator(0, 0.3)
    gen = PerturbationGenerator(1, 0.3, input="grad")
    with pytest.raises(ValueError, match="pass the input gradient as grad"):
        gen(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, H, W\)"):
        gen(torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        gen(torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 27))
