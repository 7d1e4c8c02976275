"""Triton kernel of the fused clean + adversarial cross-entropy: one program per row
computes both rows' log-sum-exp, argmax and logit gradients."""

import triton
import triton.language as tl


@triton.jit
def _row_ce(z_ptr, g_ptr, base, C, t, w, COMPUTE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    best = tl.full([], float("-inf"), tl.float32)
    arg = tl.full([], 0, tl.int64)
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(z_ptr + base + offs, mask=offs < C, other=float("-inf")).to(tl.float32)
        bm = tl.max(z, axis=0)
        ba = tl.argmax(z, axis=0, tie_break_left=True).to(tl.int64) + start
        take = (bm > best) | (start == 0)  # strictly greater: the first maximum wins, as argmax
        arg = tl.where(take, ba, arg)
        best = tl.where(take, bm, best)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = tl.load(z_ptr + base + offs, mask=offs < C, other=float("-inf")).to(tl.float32)
        acc += tl.exp(z - best)
    total = tl.sum(acc, axis=0)
    if COMPUTE_GRAD:
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            z = tl.load(z_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            grad = w * (tl.exp(z - best) / total - tl.where(offs == t, 1.0, 0.0))
            tl.store(g_ptr + base + offs, grad.to(g_ptr.dtype.element_ty), mask=mask)
    valid = (t >= 0) & (t < C)
    zt = tl.load(z_ptr + base + t, mask=valid, other=float("nan")).to(tl.float32)  # bad label: NaN loss
    return best + tl.log(total) - zt, (arg == t).to(tl.int64)


@triton.jit
def clean_adv_loss_kernel(clean_ptr, adv_ptr, target_ptr, gc_ptr, ga_ptr, row_loss_ptr, hits_ptr, N, C, alpha,
                          COMPUTE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * C
    t = tl.load(target_ptr + row)
    ce_c, ok_c = _row_ce(clean_ptr, gc_ptr, base, C, t, alpha / N, COMPUTE_GRAD, BLOCK)
    ce_a, ok_a = _row_ce(adv_ptr, ga_ptr, base, C, t, (1.0 - alpha) / N, COMPUTE_GRAD, BLOCK)
    tl.store(row_loss_ptr + row, alpha * ce_c + (1.0 - alpha) * ce_a)
    tl.store(hits_ptr + row, ok_c)
    tl.store(hits_ptr + N + row, ok_a)
