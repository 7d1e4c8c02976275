"""The public ops of gatfast. Each checks its arguments (a TypeError or ValueError
naming the argument, before any kernel runs), picks the backend for the tensors'
device (gatfast.ops.backends) and runs it.

Shapes: x, delta, grad: (N, ...); per-sample norms run over every dim but the first.
Dtypes: float32, float16, bfloat16; float64 too on the torch, cpp and cuda backends.
"""

from __future__ import annotations

import torch

from gatfast.ops import backends, reference
from gatfast.ops import checks as _checks


class _ReferenceImpl:
    """The `torch` backend: reference.py, adapted to the compiled backends' calls."""

    @staticmethod
    def project(delta, eps, norm):
        return reference.project(delta, eps, norm)

    @staticmethod
    def perturb(x, delta, eps, norm, lo, hi, grad_scale, with_sq):
        return reference.perturb(x, delta, eps, norm, lo, hi, grad_scale, with_sq)

    @staticmethod
    def pgd_step(x_adv, grad, x0, step_size, eps, norm, lo, hi, out):
        result = reference.pgd_step(x_adv, grad, x0, step_size, eps, norm, lo, hi)
        if out is None:
            return result
        with torch.no_grad():
            out.copy_(result)
        return out

    @staticmethod
    def clean_adv_loss(logits_clean, logits_adv, target, alpha, compute_grad):
        return reference.clean_adv_loss(logits_clean, logits_adv, target, alpha)


# Triton's adapter, where backends loaded the kernels (a GPU, or the interpreter).
_TRITON_IMPL = None
if backends.triton_error() is None:
    from gatfast.ops._triton_ops import impl as _TRITON_IMPL
_CPP_IMPL = None
if backends.cpp_built():
    from gatfast.ops._cpp_ops import impl as _CPP_IMPL


def _impl(t: torch.Tensor):
    name = backends.resolve(t.device)
    if name == "torch":
        return _ReferenceImpl
    if name in ("cpp", "cuda"):
        return _CPP_IMPL
    if t.dtype == torch.float64:
        raise TypeError("the triton backend takes float32, float16 or bfloat16 tensors, got float64: "
                        "use the cpp, cuda or torch backend for float64")
    return _TRITON_IMPL


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Projection onto the eps-ball: `linf` clamps to [-eps, eps]; `l2` scales each
    sample by min(1, eps / ||delta||_2) (an all-zero sample stays zero). Differentiable."""
    _checks.tensor(delta, "delta")
    eps = _checks.positive(eps, "eps")
    norm = _checks.norm(norm, allow_none=False)
    return _impl(delta).project(delta, eps, norm)


def _perturb_args(x, delta, eps, norm, lo, hi, grad_scale):
    _checks.tensor(x, "x")
    _checks.like(delta, "delta", x, "x")
    norm = _checks.norm(norm, allow_none=True)
    eps = _checks.positive(eps, "eps") if norm is not None or eps is not None else 1.0
    lo, hi = _checks.box(lo, hi)
    grad_scale = _checks.finite(grad_scale, "grad_scale")
    return eps, norm, lo, hi, grad_scale


def perturb(x, delta, eps, norm, lo=0.0, hi=1.0, grad_scale=1.0) -> torch.Tensor:
    """x_adv = clamp(x + project(delta, eps, norm), lo, hi) in one pass; norm=None
    clamps to the box only. Differentiable in delta and x; the gradient flowing back
    to delta is multiplied by grad_scale (the fused GAT step passes a negative one)."""
    eps, norm, lo, hi, grad_scale = _perturb_args(x, delta, eps, norm, lo, hi, grad_scale)
    return _impl(x).perturb(x, delta, eps, norm, lo, hi, grad_scale, False)[0]


def perturb_with_norm(x, delta, eps, norm, lo=0.0, hi=1.0, grad_scale=1.0):
    """perturb(...) and sq_norm, where sq_norm[i] = ||x_adv[i] - x[i]||^2 (float32, or
    float64 for float64 inputs). grad_scale acts only on the gradient arriving through
    x_adv, never on the one through sq_norm."""
    eps, norm, lo, hi, grad_scale = _perturb_args(x, delta, eps, norm, lo, hi, grad_scale)
    return _impl(x).perturb(x, delta, eps, norm, lo, hi, grad_scale, True)


def pgd_step(x_adv, grad, x0, step_size, eps, norm, lo=0.0, hi=1.0, out=None) -> torch.Tensor:
    """One PGD ascent step: linf moves by step_size * sign(grad), l2 by step_size *
    grad / ||grad||_2 (a zero gradient does not move); the result is projected onto
    the eps-ball around x0 and into [lo, hi]. No autograd. `out` receives the result in
    place (for CUDA graphs); it may be x_adv itself, but not x0."""
    _checks.tensor(x_adv, "x_adv")
    _checks.like(grad, "grad", x_adv, "x_adv")
    _checks.like(x0, "x0", x_adv, "x_adv")
    step_size = _checks.positive(step_size, "step_size")
    eps = _checks.positive(eps, "eps")
    norm = _checks.norm(norm, allow_none=False)
    lo, hi = _checks.box(lo, hi)
    if out is not None:
        _checks.like(out, "out", x_adv, "x_adv")
        if _shares_memory(out, x0):
            raise ValueError("out must not share memory with x0: the step reads x0 after writing out")
    with torch.no_grad():
        if out is not None and (_shares_memory(out, x_adv) or _shares_memory(out, grad)):
            # The ops' schemas declare `out` as their only written tensor; writing into an
            # input would be an alias they do not declare (and torch.compile, functionalization
            # and opcheck rely on the schema), so the step goes to a new tensor and is copied.
            return out.copy_(_impl(x_adv).pgd_step(x_adv, grad, x0, step_size, eps, norm, lo, hi, None))
        return _impl(x_adv).pgd_step(x_adv, grad, x0, step_size, eps, norm, lo, hi, out)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def clean_adv_loss(logits_clean, logits_adv, target, alpha=0.5):
    """alpha * CE(logits_clean, target) + (1 - alpha) * CE(logits_adv, target), batch
    mean, as a 0-dim float32 tensor (float64 for float64 logits), with the number of
    correct predictions on each as 0-dim int64 tensors on the logits' device. The
    compiled backends compute both logit gradients in the forward pass; backward only
    scales them. Nothing here synchronises with the host."""
    _checks.logits(logits_clean, "logits_clean")
    _checks.like(logits_adv, "logits_adv", logits_clean, "logits_clean")
    _checks.target(target, logits_clean)
    alpha = _checks.alpha(alpha)
    compute_grad = torch.is_grad_enabled() and (logits_clean.requires_grad or logits_adv.requires_grad)
    return _impl(logits_clean).clean_adv_loss(logits_clean, logits_adv, target, alpha, compute_grad)
