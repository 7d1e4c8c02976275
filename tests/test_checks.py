"""Bad input gets a TypeError or ValueError naming the argument, before any kernel runs."""

import math

import pytest
import torch

import gatfast
from conftest import cpu_backends


@pytest.fixture(params=cpu_backends())
def backend(request):
    with gatfast.use_backend(request.param):
        yield request.param


X = torch.rand(2, 3, 4)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(x=X.long()), TypeError, "x must be a floating-point"),
        (dict(x=X.numpy()), TypeError, "x must be a torch.Tensor"),
        (dict(delta=X.double()), TypeError, "delta must have the dtype of x"),
        (dict(delta=torch.rand(2, 3, 5)), ValueError, "delta must have the shape of x"),
        (dict(delta=torch.rand(3, 3, 4)), ValueError, "delta must have the shape of x"),
        (dict(x=torch.rand(0, 3), delta=torch.rand(0, 3)), ValueError, "x must be a non-empty batch"),
        (dict(x=torch.tensor(0.5), delta=torch.tensor(0.1)), ValueError, "x must be a non-empty batch"),
        (dict(eps=0.0), ValueError, "eps must be finite and > 0"),
        (dict(eps=-1), ValueError, "eps must be finite and > 0"),
        (dict(eps=math.inf), ValueError, "eps must be finite and > 0"),
        (dict(eps=math.nan), ValueError, "eps must be finite and > 0"),
        (dict(eps="0.3"), TypeError, "eps must be a real number"),
        (dict(eps=True), TypeError, "eps must be a real number"),
        (dict(norm="l1"), ValueError, "norm must be 'linf', 'l2' or None"),
        (dict(lo=1.0, hi=1.0), ValueError, "lo must be < hi"),
        (dict(lo=1.0, hi=0.0), ValueError, "lo must be < hi"),
        (dict(hi=math.inf), ValueError, "hi must be finite"),
        (dict(grad_scale=math.nan), ValueError, "grad_scale must be finite"),
    ],
)
def test_perturb_bad_input(backend, kwargs, error, words):
    args = dict(x=X, delta=torch.zeros_like(X), eps=0.3, norm="linf") | kwargs
    with pytest.raises(error, match=words):
        gatfast.perturb(**args)
    with pytest.raises(error, match=words):
        gatfast.perturb_with_norm(**args)


def test_perturb_box_only_needs_no_eps(backend):
    out = gatfast.perturb(X, X, None, None)
    torch.testing.assert_close(out, (2 * X).clamp(0, 1))


def test_project_bad_input(backend):
    with pytest.raises(ValueError, match="norm must be 'linf', 'l2', got None"):
        gatfast.project(X, 0.3, None)
    with pytest.raises(ValueError, match="eps must be finite and > 0"):
        gatfast.project(X, 0, "l2")
    with pytest.raises(TypeError, match="delta must be a floating-point"):
        gatfast.project(X.int(), 0.3, "l2")


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(grad=X.half()), TypeError, "grad must have the dtype of x_adv"),
        (dict(x0=torch.rand(2, 12)), ValueError, "x0 must have the shape of x_adv"),
        (dict(step_size=0), ValueError, "step_size must be finite and > 0"),
        (dict(eps=-0.1), ValueError, "eps must be finite and > 0"),
        (dict(norm=None), ValueError, "norm must be 'linf', 'l2', got None"),
        (dict(lo=0.5, hi=0.5), ValueError, "lo must be < hi"),
        (dict(out=torch.empty(2, 3, 4, dtype=torch.float64)), TypeError, "out must have the dtype of x_adv"),
        (dict(out="x0"), ValueError, "out must not share memory with x0"),
    ],
)
def test_pgd_step_bad_input(backend, kwargs, error, words):
    x0 = X.clone()
    args = dict(x_adv=X, grad=torch.randn_like(X), x0=x0, step_size=0.1, eps=0.3, norm="linf") | kwargs
    if args.get("out") == "x0":
        args["out"] = x0
    with pytest.raises(error, match=words):
        gatfast.pgd_step(**args)


L = torch.randn(4, 10)
T = torch.tensor([0, 1, 2, 9])


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(logits_clean=L.long()), TypeError, "logits_clean must be a floating-point"),
        (dict(logits_adv=L.half()), TypeError, "logits_adv must have the dtype of logits_clean"),
        (dict(logits_clean=torch.randn(4, 10, 1)), ValueError, r"logits_clean must have shape \(N, C\)"),
        (dict(logits_adv=torch.randn(4, 11)), ValueError, "logits_adv must have the shape of logits_clean"),
        (dict(logits_clean=torch.randn(0, 10), logits_adv=torch.randn(0, 10)), ValueError, "non-empty"),
        (dict(target=T.float()), TypeError, "target must hold class indices as int64"),
        (dict(target=T.bool()), TypeError, "target must hold class indices as int64"),
        (dict(target=T[:3]), ValueError, r"target must have shape \(4,\)"),
        (dict(target=torch.tensor([0, 1, 2, 10])), ValueError, r"target\[3\] = 10 is outside the class range \[0, 10\)"),
        (dict(target=torch.tensor([0, -1, 2, 3])), ValueError, r"target\[1\] = -1 is outside"),
        (dict(alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
        (dict(alpha=-0.1), ValueError, r"alpha must be in \[0, 1\]"),
        (dict(alpha=math.nan), ValueError, "alpha must be finite"),
    ],
)
def test_clean_adv_loss_bad_input(backend, kwargs, error, words):
    args = dict(logits_clean=L, logits_adv=L.clone(), target=T, alpha=0.5) | kwargs
    with pytest.raises(error, match=words):
        gatfast.clean_adv_loss(**args)


def test_int32_labels_are_accepted(backend):
    loss32 = gatfast.clean_adv_loss(L, L, T.int())[0]
    loss64 = gatfast.clean_adv_loss(L, L, T)[0]
    torch.testing.assert_close(loss32, loss64)


def test_checks_run_before_any_kernel(monkeypatch):
    """A bad argument never reaches a backend: the backends are replaced by a trap."""
    from gatfast import ops

    def trap(_):
        raise AssertionError("a kernel was reached")

    monkeypatch.setattr(ops, "_impl", trap)
    with pytest.raises(ValueError, match="eps"):
        gatfast.perturb(X, X, 0.0, "l2")
    with pytest.raises(ValueError, match="target"):
        gatfast.clean_adv_loss(L, L, torch.tensor([0, 1, 2, 99]))
    with pytest.raises(ValueError, match="lo must be < hi"):
        gatfast.pgd_step(X, X, X.clone(), 0.1, 0.3, "l2", lo=1.0, hi=1.0)
