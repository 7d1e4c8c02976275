"""Triton kernel of one PGD step (linf: sign step; l2: normalised step), then the
projection onto the eps-ball around x0 and the box."""

import triton
import triton.language as tl

from .perturb import clamp, l2_factor, load3, row_norm


@triton.jit
def pgd_step_kernel(xa_ptr, g_ptr, x0_ptr, out_ptr, D, step_size, eps, lo, hi,
                    NORM: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * D
    step = step_size
    f = 1.0
    if NORM == 2:
        gn = row_norm(g_ptr, base, D, BLOCK)
        step = tl.where(gn > 0, step_size / tl.where(gn > 0, gn, 1.0), 0.0)  # a zero gradient takes no step
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, D, BLOCK):
            offs, mask, a, g, z = load3(xa_ptr, g_ptr, x0_ptr, base, start, D, BLOCK, True)
            v = a + step * g - z
            acc += v * v
        dn = tl.sqrt(tl.sum(acc, axis=0))
        f = l2_factor(dn, eps)
    for start in range(0, D, BLOCK):
        offs, mask, a, g, z = load3(xa_ptr, g_ptr, x0_ptr, base, start, D, BLOCK, True)
        if NORM == 1:
            sg = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0))  # as torch.sign: sign(0) = sign(NaN) = 0
            d = clamp(a + step_size * sg - z, -eps, eps)
        else:
            d = (a + step * g - z) * f
        tl.store(out_ptr + base + offs, clamp(z + d, lo, hi).to(out_ptr.dtype.element_ty), mask=mask)
