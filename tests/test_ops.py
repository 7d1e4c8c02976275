"""Every op on every backend against reference.py: values, gradients, dtypes, shapes."""

import pytest
import torch

import gatfast
from gatfast.ops import reference
from helpers import GRAD_TOL, close, images, non_contiguous
from conftest import all_cases

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPES = [(1, 3, 32, 32), (5, 3, 32, 32), (3, 3072), (4, 1, 28, 28), (7, 37)]  # 37: not a block multiple
NORMS = [None, "linf", "l2"]


def _skip_unsupported(backend, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("the triton backend takes no float64")


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", NORMS)
def test_perturb_matches_reference(backend, device, dtype, shape, norm):
    _skip_unsupported(backend, dtype)
    x, delta = images(shape, dtype, device)
    eps = 0.3 if norm != "l2" else 1.5
    expected, expected_sq = reference.perturb(x, delta, eps, norm, 0.0, 1.0, with_sq=True)
    with gatfast.use_backend(backend):
        got = gatfast.perturb(x, delta, eps, norm)
        got2, sq = gatfast.perturb_with_norm(x, delta, eps, norm)
    assert got.dtype == dtype and got.shape == x.shape
    close(got, expected, dtype)
    close(got2, expected, dtype)
    assert sq.shape == (shape[0],) and sq.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    close(sq, expected_sq, dtype)


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (6, 37), (2, 5000)])
def test_project_matches_reference(backend, device, dtype, norm, shape):
    _skip_unsupported(backend, dtype)
    _, delta = images(shape, dtype, device)
    with gatfast.use_backend(backend):
        got = gatfast.project(delta, 0.4, norm)
    close(got, reference.project(delta, 0.4, norm), dtype)


def _perturb_loss(fn, x, delta, weight, sq_weight):
    x_adv, sq = fn(x, delta)
    return (x_adv.double() * weight).sum() + (sq.double() * sq_weight).sum()


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("grad_scale", [1.0, -2.0])
@pytest.mark.parametrize("shape", [(5, 3, 8, 8), (3, 3072)])
def test_perturb_gradients_match_reference(backend, device, dtype, norm, grad_scale, shape):
    _skip_unsupported(backend, dtype)
    x0, d0 = images(shape, dtype, device, seed=1)
    weight = torch.randn(shape, dtype=torch.float64, device=device)
    sq_weight = torch.randn(shape[0], dtype=torch.float64, device=device)
    eps = 0.3 if norm != "l2" else 2.0

    def grads(fn):
        x, delta = x0.clone().requires_grad_(), d0.clone().requires_grad_()
        _perturb_loss(fn, x, delta, weight, sq_weight).backward()
        return x.grad, delta.grad

    ref_gx, ref_gd = grads(lambda x, d: reference.perturb(x, d, eps, norm, 0.0, 1.0, grad_scale, True))
    with gatfast.use_backend(backend):
        gx, gd = grads(lambda x, d: gatfast.perturb_with_norm(x, d, eps, norm, grad_scale=grad_scale))
    close(gd, ref_gd, dtype, GRAD_TOL)
    close(gx, ref_gx, dtype, GRAD_TOL)


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_grad_scale_scales_only_the_x_adv_path(backend, device, norm):
    x0, d0 = images((4, 50), torch.float32, device, seed=2)
    with gatfast.use_backend(backend):
        def grad_delta(scale, use_sq):
            d = d0.clone().requires_grad_()
            x_adv, sq = gatfast.perturb_with_norm(x0, d, 0.5, norm, grad_scale=scale)
            (sq.sum() if use_sq else x_adv.sum()).backward()
            return d.grad

        torch.testing.assert_close(grad_delta(-3.0, False), -3.0 * grad_delta(1.0, False))
        torch.testing.assert_close(grad_delta(-3.0, True), grad_delta(1.0, True))


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_gradients_match_reference(backend, device, norm):
    _, d0 = images((6, 40), torch.float32, device, seed=3)
    w = torch.randn(6, 40, device=device)

    def grad(fn):
        d = d0.clone().requires_grad_()
        (fn(d) * w).sum().backward()
        return d.grad

    expected = grad(lambda d: reference.project(d, 0.2, norm))
    with gatfast.use_backend(backend):
        got = grad(lambda d: gatfast.project(d, 0.2, norm))
    close(got, expected, torch.float32, GRAD_TOL)


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (5, 3, 32, 32), (3, 3072), (7, 37)])
def test_pgd_step_matches_reference(backend, device, dtype, norm, shape):
    _skip_unsupported(backend, dtype)
    x0, grad = images(shape, dtype, device, seed=4)
    x_adv = (x0 + 0.05 * torch.randn_like(x0)).clamp(0, 1)
    eps, step = (0.3, 0.1) if norm == "linf" else (1.0, 0.5)
    expected = reference.pgd_step(x_adv, grad, x0, step, eps, norm)
    with gatfast.use_backend(backend):
        got = gatfast.pgd_step(x_adv, grad, x0, step, eps, norm)
        close(got, expected, dtype)
        in_place = x_adv.clone()
        same = gatfast.pgd_step(in_place, grad, x0, step, eps, norm, out=in_place)
    assert same is in_place
    close(in_place, expected, dtype)


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_step_stays_in_ball_and_box(backend, device, norm):
    x0, grad = images((16, 3, 8, 8), torch.float32, device, seed=5)
    x_adv = x0.clone()
    eps = 0.1 if norm == "linf" else 0.5
    with gatfast.use_backend(backend):
        for _ in range(5):
            x_adv = gatfast.pgd_step(x_adv, grad, x0, eps / 2, eps, norm)
    d = (x_adv - x0).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (size > 0.5 * eps).all()  # it did move


CLASSES = [2, 10, 100, 1000]


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_clean_adv_loss_matches_reference(backend, device, dtype, classes, alpha):
    _skip_unsupported(backend, dtype)
    g = torch.Generator().manual_seed(classes)
    n = 13
    lc0 = (torch.randn(n, classes, generator=g) * 3).to(dtype=dtype, device=device)
    la0 = (torch.randn(n, classes, generator=g) * 3).to(dtype=dtype, device=device)
    target = torch.randint(0, classes, (n,), generator=g).to(device)
    # Make some predictions right, so the counts are not trivially zero.
    lc0[: n // 2, :] = lc0[: n // 2, :].index_fill(1, torch.tensor([0], device=device), 0)
    lc0[torch.arange(n // 2), target[: n // 2]] = 20

    def run(fn):
        lc, la = lc0.clone().requires_grad_(), la0.clone().requires_grad_()
        loss, cc, ca = fn(lc, la)
        (loss * 2.5).backward()
        return loss, cc, ca, lc.grad, la.grad

    ref = run(lambda lc, la: reference.clean_adv_loss(lc, la, target, alpha))
    with gatfast.use_backend(backend):
        got = run(lambda lc, la: gatfast.clean_adv_loss(lc, la, target, alpha))
    loss, cc, ca = got[:3]
    assert loss.dim() == 0 and loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert cc.dtype == ca.dtype == torch.int64 and cc.dim() == ca.dim() == 0 and cc.device == loss.device
    close(loss, ref[0], torch.float64 if dtype == torch.float64 else torch.float32)
    assert int(cc) == int(ref[1]) >= n // 2
    assert int(ca) == int(ref[2])
    close(got[3], ref[3], dtype, GRAD_TOL)
    close(got[4], ref[4], dtype, GRAD_TOL)


@pytest.mark.parametrize("backend,device", all_cases())
def test_clean_adv_loss_argmax_ties_take_the_first_class(backend, device):
    logits = torch.zeros(3, 5, device=device)
    target = torch.tensor([0, 1, 4], device=device)
    with gatfast.use_backend(backend):
        _, cc, ca = gatfast.clean_adv_loss(logits, logits, target)
    assert int(cc) == int(ca) == 1  # argmax of a flat row is class 0


@pytest.mark.parametrize("backend,device", all_cases())
def test_clean_adv_loss_without_grad_has_no_graph(backend, device):
    lc = torch.randn(4, 10, device=device)
    with gatfast.use_backend(backend), torch.no_grad():
        loss, _, _ = gatfast.clean_adv_loss(lc, lc, torch.arange(4, device=device))
    assert not loss.requires_grad
    close(loss, reference.clean_adv_loss(lc, lc, torch.arange(4, device=device))[0], torch.float32)


@pytest.mark.parametrize("backend,device", all_cases())
def test_non_contiguous_inputs_give_the_right_answer(backend, device):
    x, delta = images((4, 3, 8, 8), torch.float32, device, seed=6)
    xn, dn = non_contiguous(x), non_contiguous(delta)
    lc = torch.randn(6, 10, device=device)
    lcn = lc.t().contiguous().t()
    target = torch.arange(6, device=device)
    with gatfast.use_backend(backend):
        close(gatfast.perturb(xn, dn, 1.0, "l2"), reference.perturb(x, delta, 1.0, "l2")[0], torch.float32)
        close(gatfast.project(dn, 0.1, "linf"), reference.project(delta, 0.1, "linf"), torch.float32)
        close(gatfast.pgd_step(xn, dn, xn, 0.1, 0.2, "linf"), reference.pgd_step(x, delta, x, 0.1, 0.2, "linf"),
              torch.float32)
        out = non_contiguous(torch.zeros_like(x))
        gatfast.pgd_step(x, delta, x, 0.1, 0.2, "l2", out=out)
        close(out, reference.pgd_step(x, delta, x, 0.1, 0.2, "l2"), torch.float32)
        close(gatfast.clean_adv_loss(lcn, lcn, target)[0], reference.clean_adv_loss(lc, lc, target)[0],
              torch.float32)


@pytest.mark.parametrize("backend,device", all_cases())
def test_l2_all_zero_row_gives_no_nan(backend, device):
    x = torch.full((3, 20), 0.5, device=device)
    delta = torch.zeros(3, 20, device=device)
    delta[1] = 1.0  # one row outside the ball, the others exactly zero
    with gatfast.use_backend(backend):
        d = delta.clone().requires_grad_()
        x_adv, sq = gatfast.perturb_with_norm(x, d, 0.5, "l2")
        (x_adv.sum() + sq.sum()).backward()
        p = gatfast.project(torch.zeros(2, 7, device=device), 0.5, "l2")
        step = gatfast.pgd_step(x, torch.zeros_like(x), x, 0.1, 0.5, "l2")
    for t in (x_adv, sq, d.grad, p, step):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(x_adv[0], x[0])
    torch.testing.assert_close(step, x)  # a zero gradient does not move
    assert p.abs().max() == 0


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_larger_than_the_box(backend, device, norm):
    x, delta = images((4, 30), torch.float32, device, seed=7, scale=3.0)
    with gatfast.use_backend(backend):
        got = gatfast.perturb(x, delta, 100.0, norm)
    close(got, (x + delta).clamp(0, 1), torch.float32)


def _special_values(device):
    """Inputs that catch a clamp or sign written with fmin/fmax: NaN, +-inf, -0.0 and
    values exactly on a bound, in x, delta and the gradient."""
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.0, 1.0, 0.2, 0.7],
                      [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                      [0.1, 0.9, 0.3, 0.0, 1.0, nan, 0.4, 0.6, 0.2, 0.8]], device=device)
    delta = torch.tensor([[nan, -0.0, inf, -inf, 0.3, -0.3, -0.3, 0.3, 0.0, -0.0],
                          [0.1, -0.2, 0.05, 0.0, -0.0, 0.3, -0.3, 0.2, 0.1, 0.0],
                          [nan, 0.1, 0.2, -0.1, 0.1, 0.0, 0.3, -0.3, 0.0, 0.1]], device=device)
    grad = torch.tensor([[nan, 0.0, -0.0, inf, -inf, 1.0, -1.0, nan, 2.0, -3.0],
                         [0.0, -0.0, 0.0, 0.0, -0.0, 0.0, 0.0, 0.0, -0.0, 0.0],
                         [1.0, -2.0, inf, 0.5, -0.5, 0.1, nan, 0.0, 1.0, -1.0]], device=device)
    return x, delta, grad


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", NORMS)
def test_perturb_follows_torch_clamp_on_nan_inf_and_bounds(backend, device, norm):
    """A NaN from a generator must stay NaN (the non-finite guard then sees it), never
    become a valid-looking pixel; inf, -0.0 and values on a bound as torch.clamp has them."""
    x, delta, _ = _special_values(device)
    eps = 0.3
    expected, expected_sq = reference.perturb(x, delta, eps, norm, 0.0, 1.0, with_sq=True)
    with gatfast.use_backend(backend):
        got, sq = gatfast.perturb_with_norm(x, delta, eps, norm)
        projected = gatfast.project(delta, eps, norm) if norm else None
    torch.testing.assert_close(got, expected, equal_nan=True, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sq, expected_sq, equal_nan=True, atol=1e-6, rtol=1e-6)
    if norm:
        torch.testing.assert_close(projected, reference.project(delta, eps, norm), equal_nan=True)


@pytest.mark.parametrize("backend,device", all_cases())
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_step_follows_torch_sign_and_clamp_on_nan_inf_and_bounds(backend, device, norm):
    """torch.sign(NaN) is 0: a NaN gradient in a linf step takes no step (it must not
    become a step of -eps); zero rows take no step; NaN in x stays NaN."""
    x0, delta, grad = _special_values(device)
    x_adv = (x0 + delta.nan_to_num(0.0, 0.3, -0.3).clamp(-0.3, 0.3)).clamp(0, 1)
    expected = reference.pgd_step(x_adv, grad, x0, 0.1, 0.3, norm)
    with gatfast.use_backend(backend):
        got = gatfast.pgd_step(x_adv, grad, x0, 0.1, 0.3, norm)
    torch.testing.assert_close(got, expected, equal_nan=True, atol=1e-6, rtol=1e-6)
