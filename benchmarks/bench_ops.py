"""Op micro-benchmarks: every op on every backend that is fast on this device,
against the eager PyTorch chain a user would write, timed in the same run.

    make bench            (or: pytest benchmarks/bench_ops.py)

benchmarks/conftest.py turns the timings into a ratio table (eager time / op time)
in benchmarks/results/ops-<device>.md and .json. On a GPU each timed call runs the op
INNER times and synchronises once, so launch overhead is measured, not sync latency.
"""

import pytest
import torch
import torch.nn.functional as F

import gatfast

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INNER = 50 if DEVICE == "cuda" else 1
# The interpreter is a correctness tool, not a speed one: triton is timed on GPUs only.
FAST_BACKENDS = [b for b in (["cuda", "triton"] if DEVICE == "cuda" else ["cpp"]) if b in gatfast.available_backends()]
IMPLS = ["eager"] + FAST_BACKENDS + (["auto"] if DEVICE == "cuda" else [])
IMAGE_SHAPES = {"256x3x32x32": (256, 3, 32, 32), "1024x1x28x28": (1024, 1, 28, 28)}
if DEVICE == "cuda":  # 100 MB a tensor: bandwidth, not launch latency, decides
    IMAGE_SHAPES["2048x3x64x64"] = (2048, 3, 64, 64)
LOGIT_SHAPES = {"256x10": (256, 10), "256x1000": (256, 1000)}
EPS = {"linf": 8 / 255, "l2": 0.5}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _time(benchmark, fn, info):
    def many():
        for _ in range(INNER):
            fn()
        _sync()

    many()  # warm-up (compilation, caches)
    benchmark.extra_info.update(info, inner=INNER, device=DEVICE)
    benchmark.pedantic(many, rounds=30 if DEVICE == "cuda" else 20, warmup_rounds=2)


def _rows(v, like):
    return v.view(-1, *([1] * (like.dim() - 1)))


def eager_perturb(x, delta, eps, norm):
    if norm == "linf":
        p = delta.clamp(-eps, eps)
    else:
        p = delta * _rows(eps / delta.flatten(1).norm(dim=1).clamp_min(eps), delta)
    return (x + p).clamp(0, 1)


def eager_pgd_step(x_adv, grad, x0, step, eps, norm):
    """The chain attack libraries write (torchattacks' PGD / PGDL2)."""
    if norm == "linf":
        x_new = x_adv + step * grad.sign()
        delta = (x_new - x0).clamp(-eps, eps)
    else:
        gn = grad.flatten(1).norm(dim=1) + 1e-10
        x_new = x_adv + step * grad / _rows(gn, grad)
        delta = x_new - x0
        f = torch.clamp(eps / (delta.flatten(1).norm(dim=1) + 1e-10), max=1.0)
        delta = delta * _rows(f, delta)
    return (x0 + delta).clamp(0, 1)


def eager_clean_adv_loss(lc, la, t, alpha):
    loss = alpha * F.cross_entropy(lc, t) + (1 - alpha) * F.cross_entropy(la, t)
    return loss, (lc.argmax(1) == t).sum(), (la.argmax(1) == t).sum()


def _backend(impl):
    return gatfast.use_backend("auto" if impl == "eager" else impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", list(IMAGE_SHAPES))
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
def test_perturb(benchmark, impl, norm, shape, direction):
    x = torch.rand(IMAGE_SHAPES[shape], device=DEVICE)
    delta = (torch.randn_like(x) * 0.1).requires_grad_(direction != "fwd")
    grad_out = torch.randn_like(x)
    eps = EPS[norm]
    op = (lambda: eager_perturb(x, delta, eps, norm)) if impl == "eager" else (lambda: gatfast.perturb(x, delta, eps, norm))

    def run():
        out = op()
        if direction != "fwd":
            (delta.grad,) = torch.autograd.grad(out, delta, grad_out)

    with _backend(impl):
        bytes_moved = x.numel() * x.element_size() * (3 if direction == "fwd" else 6)
        _time(benchmark, run, dict(op=f"perturb {norm}", case=shape, direction=direction, impl=impl, bytes=bytes_moved))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", list(IMAGE_SHAPES))
def test_pgd_step(benchmark, impl, norm, shape):
    x0 = torch.rand(IMAGE_SHAPES[shape], device=DEVICE)
    grad = torch.randn_like(x0)
    x_adv = x0.clone()
    eps = EPS[norm]
    if impl == "eager":
        run = lambda: eager_pgd_step(x_adv, grad, x0, eps / 4, eps, norm)
    else:
        run = lambda: gatfast.pgd_step(x_adv, grad, x0, eps / 4, eps, norm)
    with _backend(impl):
        bytes_moved = x0.numel() * x0.element_size() * 4
        _time(benchmark, run, dict(op=f"pgd_step {norm}", case=shape, direction="fwd", impl=impl, bytes=bytes_moved))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(LOGIT_SHAPES))
@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
def test_clean_adv_loss(benchmark, impl, shape, direction):
    n, c = LOGIT_SHAPES[shape]
    lc = torch.randn(n, c, device=DEVICE, requires_grad=direction != "fwd")
    la = torch.randn(n, c, device=DEVICE, requires_grad=direction != "fwd")
    t = torch.randint(0, c, (n,), device=DEVICE)
    fn = eager_clean_adv_loss if impl == "eager" else gatfast.clean_adv_loss

    def run():
        loss, _, _ = fn(lc, la, t, 0.5)
        if direction != "fwd":
            torch.autograd.grad(loss, (lc, la))

    with _backend(impl):
        _time(benchmark, run, dict(op="clean_adv_loss", case=shape, direction=direction, impl=impl,
                                   bytes=lc.numel() * lc.element_size() * (2 if direction == "fwd" else 4)))


@pytest.mark.skipif(DEVICE != "cuda", reason="the bandwidth yardstick is for GPUs")
@pytest.mark.parametrize("shape", list(IMAGE_SHAPES))
def test_copy_bandwidth(benchmark, shape):
    """Device-to-device copy: the yardstick for the elementwise ops' bandwidth."""
    x = torch.rand(IMAGE_SHAPES[shape], device=DEVICE)
    y = torch.empty_like(x)
    _time(benchmark, lambda: y.copy_(x), dict(op="copy", case=shape, direction="fwd", impl="copy",
                                                bytes=2 * x.numel() * x.element_size()))
