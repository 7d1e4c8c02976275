"""Fake (meta) implementations and autograd formulas shared by the compiled op
families: the C++ ops gatfast::perturb_fwd/... and the Triton ops
gatfast::triton_perturb_fwd/.... Each family has a forward and a backward kernel;
autograd here only wires one to the other.

perturb_fwd(delta, x?, eps, norm, lo, hi, with_sq, grad_scale) -> (out, sq, scale)
    out   = clamp(x + project(delta), lo, hi), or project(delta) when x is None
    sq    = per-sample ||out - x||^2 (opmath dtype), or an empty tensor unless with_sq
    scale = per-sample l2 factor min(1, eps/||delta||) (1 for other norms), kept for backward
clean_adv_loss_fwd(logits_clean, logits_adv, target, alpha, compute_grad)
    -> (loss, grad_clean, grad_adv, correct_clean, correct_adv)
    The forward computes both logit gradients (d loss / d logits); backward only scales them.
"""

from __future__ import annotations

import torch

from gatfast.ops._norms import code


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- fake implementations: shapes and dtypes only ---------------------------------------------

def fake_perturb_fwd(delta, x, eps, norm, lo, hi, with_sq, grad_scale):
    acc = opmath_dtype(delta.dtype)
    n = delta.shape[0]
    out = delta.new_empty(delta.shape)
    sq = delta.new_empty((n,) if with_sq else (0,), dtype=acc)
    return out, sq, delta.new_empty((n,), dtype=acc)


def fake_perturb_bwd(grad_out, grad_sq, delta, x, scale, eps, norm, lo, hi, grad_scale, need_grad_x):
    return delta.new_empty(delta.shape), delta.new_empty(delta.shape if need_grad_x else (0,))


def fake_pgd_step(x_adv, grad, x0, step_size, eps, norm, lo, hi):
    return x_adv.new_empty(x_adv.shape)


def fake_pgd_step_out(x_adv, grad, x0, step_size, eps, norm, lo, hi, out):
    return None


def fake_clean_adv_loss_fwd(logits_clean, logits_adv, target, alpha, compute_grad):
    acc = opmath_dtype(logits_clean.dtype)
    grad_shape = logits_clean.shape if compute_grad else (0,)
    return (
        logits_clean.new_empty((), dtype=acc),
        logits_clean.new_empty(grad_shape),
        logits_adv.new_empty(grad_shape),
        logits_clean.new_empty((), dtype=torch.int64),
        logits_clean.new_empty((), dtype=torch.int64),
    )


# ---- autograd ---------------------------------------------------------------------------------

def register_perturb_autograd(fwd_op, bwd_op) -> None:
    """Backward of fwd_op through bwd_op; `scale` is an auxiliary output with no gradient."""

    def setup_context(ctx, inputs, output):
        delta, x, eps, norm, lo, hi, with_sq, grad_scale = inputs
        _, _, scale = output
        ctx.mark_non_differentiable(scale)
        ctx.save_for_backward(delta, x, scale)
        ctx.args = (eps, norm, lo, hi, grad_scale)
        ctx.with_sq = with_sq

    def backward(ctx, grad_out, grad_sq, _grad_scale):
        delta, x, scale = ctx.saved_tensors
        eps, norm, lo, hi, grad_scale = ctx.args
        need_grad_x = x is not None and ctx.needs_input_grad[1]
        if grad_out is None:
            grad_out = torch.zeros_like(delta)
        if not ctx.with_sq:
            grad_sq = None
        grad_delta, grad_x = bwd_op(grad_out, grad_sq, delta, x, scale, eps, norm, lo, hi, grad_scale, need_grad_x)
        return grad_delta, (grad_x if need_grad_x else None), None, None, None, None, None, None

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)


def register_loss_autograd(fwd_op) -> None:
    def setup_context(ctx, inputs, output):
        _, grad_clean, grad_adv, _, _ = output
        ctx.mark_non_differentiable(grad_clean, grad_adv)
        ctx.save_for_backward(grad_clean, grad_adv)

    def backward(ctx, grad_loss, *_unused):
        grad_clean, grad_adv = ctx.saved_tensors
        if grad_clean.numel() == 0:
            raise RuntimeError("gatfast: clean_adv_loss was called with compute_grad=False and cannot backpropagate")
        return grad_clean * grad_loss, grad_adv * grad_loss, None, None, None

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)


class OpFamily:
    """The adapter a compiled backend exposes to gatfast.ops, over its five ops."""

    def __init__(self, perturb_fwd, pgd_step, pgd_step_out, clean_adv_loss_fwd):
        self._fwd, self._pgd, self._pgd_out, self._loss = perturb_fwd, pgd_step, pgd_step_out, clean_adv_loss_fwd

    def project(self, delta, eps, norm):
        return self._fwd(delta, None, eps, code(norm), 0.0, 1.0, False, 1.0)[0]

    def perturb(self, x, delta, eps, norm, lo, hi, grad_scale, with_sq):
        out, sq, _ = self._fwd(delta, x, eps, code(norm), lo, hi, with_sq, grad_scale)
        return out, (sq if with_sq else None)

    def pgd_step(self, x_adv, grad, x0, step_size, eps, norm, lo, hi, out):
        if out is None:
            return self._pgd(x_adv, grad, x0, step_size, eps, code(norm), lo, hi)
        self._pgd_out(x_adv, grad, x0, step_size, eps, code(norm), lo, hi, out)
        return out

    def clean_adv_loss(self, logits_clean, logits_adv, target, alpha, compute_grad):
        loss, _, _, correct_clean, correct_adv = self._loss(logits_clean, logits_adv, target, alpha, compute_grad)
        return loss, correct_clean, correct_adv
