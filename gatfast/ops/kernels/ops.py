"""The Triton kernels as torch.library triton ops (gatfast::triton_*), with the same
signatures as the C++ ops so that one set of fake impls and autograd serves both."""

from __future__ import annotations

from typing import Optional

import torch
import triton
from torch.library import triton_op, wrap_triton

from .loss import clean_adv_loss_kernel
from .perturb import perturb_bwd_kernel, perturb_fwd_kernel
from .pgd import pgd_step_kernel

_MAX_BLOCK = 1024


def _block(n: int) -> int:
    return min(triton.next_power_of_2(n), _MAX_BLOCK)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton_op("gatfast::triton_perturb_fwd", mutates_args=())
def perturb_fwd(delta: torch.Tensor, x: Optional[torch.Tensor], eps: float, norm: int, lo: float, hi: float,
                with_sq: bool, grad_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    delta = delta.contiguous()
    x = x.contiguous() if x is not None else None
    n, d = delta.shape[0], delta.numel() // delta.shape[0]
    out = torch.empty_like(delta)
    scale = torch.empty(n, dtype=torch.float32, device=delta.device)
    sq = torch.empty(n if with_sq else 0, dtype=torch.float32, device=delta.device)
    wrap_triton(perturb_fwd_kernel)[(n,)](
        delta, x if x is not None else delta, out, sq if with_sq else scale, scale, d, eps, lo, hi,
        NORM=norm, HAS_X=x is not None, WITH_SQ=with_sq, BLOCK=_block(d))
    return out, sq, scale


@triton_op("gatfast::triton_perturb_bwd", mutates_args=())
def perturb_bwd(grad_out: torch.Tensor, grad_sq: Optional[torch.Tensor], delta: torch.Tensor,
                x: Optional[torch.Tensor], scale: torch.Tensor, eps: float, norm: int, lo: float, hi: float,
                grad_scale: float, need_grad_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    grad_out, delta = grad_out.contiguous(), delta.contiguous()
    x = x.contiguous() if x is not None else None
    scale = scale.float().contiguous()
    gsq = grad_sq.float().contiguous() if grad_sq is not None else None
    n, d = delta.shape[0], delta.numel() // delta.shape[0]
    grad_delta = torch.empty_like(delta)
    grad_x = torch.empty_like(delta) if need_grad_x else delta.new_empty(0)
    wrap_triton(perturb_bwd_kernel)[(n,)](
        grad_out, gsq if gsq is not None else scale, delta, x if x is not None else delta, scale, grad_delta,
        grad_x if need_grad_x else grad_delta, d, eps, lo, hi, grad_scale,
        NORM=norm, HAS_X=x is not None, HAS_GSQ=gsq is not None, NEED_GX=need_grad_x, BLOCK=_block(d))
    return grad_delta, grad_x


def _launch_pgd(x_adv, grad, x0, step_size, eps, norm, lo, hi, out):
    n, d = x_adv.shape[0], x_adv.numel() // x_adv.shape[0]
    wrap_triton(pgd_step_kernel)[(n,)](
        x_adv.contiguous(), grad.contiguous(), x0.contiguous(), out, d, step_size, eps, lo, hi,
        NORM=norm, BLOCK=_block(d))


@triton_op("gatfast::triton_pgd_step", mutates_args=())
def pgd_step(x_adv: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, step_size: float, eps: float, norm: int,
             lo: float, hi: float) -> torch.Tensor:
    out = torch.empty(x_adv.shape, dtype=x_adv.dtype, device=x_adv.device)
    _launch_pgd(x_adv, grad, x0, step_size, eps, norm, lo, hi, out)
    return out


@triton_op("gatfast::triton_pgd_step_out", mutates_args={"out"})
def pgd_step_out(x_adv: torch.Tensor, grad: torch.Tensor, x0: torch.Tensor, step_size: float, eps: float,
                 norm: int, lo: float, hi: float, out: torch.Tensor) -> None:
    # `out` must not alias an input (the schema does not declare it): gatfast.pgd_step
    # copies for callers who pass out=x_adv. No check here: it would meet fake tensors.
    if out.is_contiguous():
        _launch_pgd(x_adv, grad, x0, step_size, eps, norm, lo, hi, out)
    else:
        tmp = torch.empty(x_adv.shape, dtype=x_adv.dtype, device=x_adv.device)
        _launch_pgd(x_adv, grad, x0, step_size, eps, norm, lo, hi, tmp)
        out.copy_(tmp)


@triton_op("gatfast::triton_clean_adv_loss_fwd", mutates_args=())
def clean_adv_loss_fwd(logits_clean: torch.Tensor, logits_adv: torch.Tensor, target: torch.Tensor, alpha: float,
                       compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor]:
    lc, la, target = logits_clean.contiguous(), logits_adv.contiguous(), target.long().contiguous()
    n, c = lc.shape
    row_loss = torch.empty(n, dtype=torch.float32, device=lc.device)
    hits = torch.empty(2, n, dtype=torch.int64, device=lc.device)
    gc = torch.empty_like(lc) if compute_grad else lc.new_empty(0)
    ga = torch.empty_like(la) if compute_grad else la.new_empty(0)
    wrap_triton(clean_adv_loss_kernel)[(n,)](
        lc, la, target, gc if compute_grad else lc, ga if compute_grad else la, row_loss, hits, n, c, alpha,
        COMPUTE_GRAD=compute_grad, BLOCK=_block(c))
    return row_loss.sum() / n, gc, ga, hits[0].sum(), hits[1].sum()
