"""Numerical gradients (float64 gradcheck) and torch.library.opcheck of the
registered C++ ops on the CPU. The Triton ops' opcheck needs a GPU (test_gpu.py)."""

import pytest
import torch
from torch.autograd import gradcheck

import gatfast

needs_cpp = pytest.mark.skipif("cpp" not in gatfast.available_backends(), reason="C++ extension not built")


def _away_from_kinks(shape, seed):
    """x well inside the box and delta whose samples are clearly inside or outside the
    ball, so finite differences never straddle a clamp."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(shape, generator=g, dtype=torch.float64)
    delta = torch.randn(shape, generator=g, dtype=torch.float64) * 0.05
    delta[0] *= 10  # this sample's l2 norm is far above eps
    return x, delta


@needs_cpp
@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("norm", ["linf", "l2", None])
def test_perturb_with_norm_gradcheck(backend, norm):
    x, delta = _away_from_kinks((3, 2, 4), seed=0)
    eps = 0.15 if norm == "linf" else 0.5
    if norm == "linf":  # keep every |delta| away from eps
        delta = delta.clamp(-0.1, 0.1).where(delta.abs() < 0.12, delta.sign() * 0.3)
    with gatfast.use_backend(backend):
        fn = lambda x, d: gatfast.perturb_with_norm(x, d, eps, norm, lo=-1.0, hi=2.0, grad_scale=-1.5)
        assert gradcheck(lambda x, d: fn(x, d)[1], (x.requires_grad_(), delta.requires_grad_()))
        # grad_scale makes the x_adv -> delta gradient deliberately unlike the numerical one:
        fn1 = lambda x, d: gatfast.perturb_with_norm(x, d, eps, norm, lo=-1.0, hi=2.0)
        assert gradcheck(fn1, (x, delta))


@needs_cpp
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_gradcheck(norm):
    _, delta = _away_from_kinks((4, 6), seed=1)
    with gatfast.use_backend("cpp"):
        assert gradcheck(lambda d: gatfast.project(d, 0.2, norm), (delta.requires_grad_(),))


@needs_cpp
def test_clean_adv_loss_gradcheck():
    g = torch.Generator().manual_seed(2)
    lc = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    la = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 6, 2, 2])
    with gatfast.use_backend("cpp"):
        assert gradcheck(lambda a, b: gatfast.clean_adv_loss(a, b, target, 0.3)[0], (lc, la))


def _opcheck(op, args):
    torch.library.opcheck(op, args)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_cpp_ops(dtype):
    ops = torch.ops.gatfast
    x = torch.rand(3, 2, 5, dtype=dtype)
    delta = (torch.randn(3, 2, 5, dtype=dtype) * 0.5).requires_grad_()
    for norm in (0, 1, 2):
        _opcheck(ops.perturb_fwd.default, (delta, x, 0.4, norm, 0.0, 1.0, True, -2.0))
        _opcheck(ops.perturb_fwd.default, (delta, None, 0.4, norm, 0.0, 1.0, False, 1.0))
    out, sq, scale = ops.perturb_fwd(delta.detach(), x, 0.4, 2, 0.0, 1.0, True, 1.0)
    _opcheck(ops.perturb_bwd.default, (torch.randn_like(x), torch.randn(3, dtype=sq.dtype), delta.detach(), x, scale,
                                       0.4, 2, 0.0, 1.0, -1.0, True))
    g = torch.randn_like(x)
    for norm in (1, 2):
        _opcheck(ops.pgd_step.default, (x, g, x, 0.1, 0.3, norm, 0.0, 1.0))
        _opcheck(ops.pgd_step_out.default, (x, g, x, 0.1, 0.3, norm, 0.0, 1.0, torch.empty_like(x)))
    lc = torch.randn(4, 10, dtype=dtype, requires_grad=True)
    la = torch.randn(4, 10, dtype=dtype, requires_grad=True)
    _opcheck(ops.clean_adv_loss_fwd.default, (lc, la, torch.tensor([1, 2, 3, 9]), 0.5, True))


@needs_cpp
@pytest.mark.parametrize("alias", ["x_adv", "grad"])
def test_pgd_step_into_its_input_calls_the_op_as_its_schema_declares(monkeypatch, alias):
    """pgd_step(out=x_adv) must not hand the op an `out` that aliases an input (the
    schema declares no such alias): it runs the functional op and copies. Every op call
    it makes is recorded and passes opcheck; the op itself refuses the alias."""
    from gatfast.ops import _CPP_IMPL
    calls = []
    for attr in ("_pgd", "_pgd_out"):
        op = getattr(_CPP_IMPL, attr).default
        monkeypatch.setattr(_CPP_IMPL, attr, lambda *a, _op=op: (calls.append((_op, a)), _op(*a))[1])
    x0 = torch.rand(4, 3, 5)
    x_adv = (x0 + 0.05 * torch.randn_like(x0)).clamp(0, 1)
    grad = torch.randn_like(x0)
    expected = gatfast.pgd_step(x_adv, grad, x0, 0.1, 0.2, "l2")
    target = {"x_adv": x_adv, "grad": grad}[alias].clone()
    args = (target, grad, x0) if alias == "x_adv" else (x_adv, target, x0)
    with gatfast.use_backend("cpp"):
        calls.clear()
        result = gatfast.pgd_step(*args, 0.1, 0.2, "l2", out=target)
    assert result is target
    torch.testing.assert_close(target, expected)
    assert [op for op, _ in calls] == [torch.ops.gatfast.pgd_step.default]
    _opcheck(*calls[0])
    with pytest.raises(RuntimeError, match="out must not share memory"):
        torch.ops.gatfast.pgd_step_out(x_adv, grad, x0, 0.1, 0.2, 2, 0.0, 1.0, x_adv)
