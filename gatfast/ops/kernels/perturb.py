"""Triton kernels of perturb (forward and backward) and project."""

import triton
import triton.language as tl

@triton.jit
def clamp(v, lo, hi):
    """As torch.clamp: NaN stays NaN. Plain selects rather than tl.maximum's
    propagate_nan, whose enum a kernel can reach only as a constexpr global (a plain
    global passes the interpreter and fails the GPU compiler)."""
    v = tl.where(v < lo, lo, v)
    return tl.where(v > hi, hi, v)


@triton.jit
def l2_factor(n, eps):
    """eps / max(n, eps): 1 inside the ball, no 0/0 for a zero row, NaN for a NaN norm."""
    return tl.where(n <= eps, 1.0, eps / tl.where(n <= eps, 1.0, n))


@triton.jit
def project_value(d, s, eps, NORM: tl.constexpr):
    """NORM: 0 none, 1 linf, 2 l2 (s is the row's l2 factor)."""
    if NORM == 1:
        return clamp(d, -eps, eps)
    elif NORM == 2:
        return d * s
    else:
        return d


@triton.jit
def load3(a_ptr, b_ptr, c_ptr, base, start, D, BLOCK: tl.constexpr, HAS_C: tl.constexpr):
    """One block of three rows, as float32 (c is a when HAS_C is false), with its offsets and mask."""
    offs = start + tl.arange(0, BLOCK)
    mask = offs < D
    a = tl.load(a_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    c = a
    if HAS_C:
        c = tl.load(c_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    return offs, mask, a, b, c


@triton.jit
def row_norm(ptr, base, D, BLOCK: tl.constexpr):
    """||row||_2 of one row of D values, accumulated in float32."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(ptr + base + offs, mask=offs < D, other=0.0).to(tl.float32)
        acc += v * v
    return tl.sqrt(tl.sum(acc, axis=0))


@triton.jit
def row_l2_factor(ptr, base, D, eps, BLOCK: tl.constexpr):
    """min(1, eps / ||row||): the l2 projection's factor for one row."""
    return l2_factor(row_norm(ptr, base, D, BLOCK), eps)


@triton.jit
def perturb_fwd_kernel(delta_ptr, x_ptr, out_ptr, sq_ptr, scale_ptr, D, eps, lo, hi,
                       NORM: tl.constexpr, HAS_X: tl.constexpr, WITH_SQ: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * D
    s = 1.0
    if NORM == 2:
        s = row_l2_factor(delta_ptr, base, D, eps, BLOCK)
    tl.store(scale_ptr + row, s)
    sq = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, D, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < D
        p = project_value(tl.load(delta_ptr + base + offs, mask=mask, other=0.0).to(tl.float32), s, eps, NORM)
        if HAS_X:
            xv = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
            o = clamp(xv + p, lo, hi).to(out_ptr.dtype.element_ty)
            tl.store(out_ptr + base + offs, o, mask=mask)
            r = o.to(tl.float32) - xv
            sq += tl.where(mask, r * r, 0.0)
        else:
            tl.store(out_ptr + base + offs, p.to(out_ptr.dtype.element_ty), mask=mask)
    if WITH_SQ:
        tl.store(sq_ptr + row, tl.sum(sq, axis=0))


@triton.jit
def _grad_wrt_p(d, xv, g, s, eps, lo, hi, gs, gn2, NORM: tl.constexpr, HAS_X: tl.constexpr, OUT_DTYPE: tl.constexpr):
    """Gradient with respect to the projected perturbation p (before the projection's Jacobian)."""
    if HAS_X:
        v = xv + project_value(d, s, eps, NORM)
        inside = (v > lo) & (v < hi)  # torch.clamp passes no gradient at the bounds
        r = clamp(v, lo, hi).to(OUT_DTYPE).to(tl.float32) - xv
        return tl.where(inside, gs * g + gn2 * r, 0.0), inside, r
    else:
        return gs * g, d == d, d


@triton.jit
def perturb_bwd_kernel(g_ptr, gsq_ptr, delta_ptr, x_ptr, scale_ptr, gd_ptr, gx_ptr, D, eps, lo, hi, gs,
                       NORM: tl.constexpr, HAS_X: tl.constexpr, HAS_GSQ: tl.constexpr, NEED_GX: tl.constexpr,
                       BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * D
    s = tl.load(scale_ptr + row)
    gn2 = 0.0
    if HAS_GSQ:
        gn2 = 2.0 * tl.load(gsq_ptr + row)
    OUT_DTYPE: tl.constexpr = gd_ptr.dtype.element_ty
    coef = 0.0
    l2_active = s < 1.0  # read only when NORM == 2
    if NORM == 2:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, D, BLOCK):
            offs, mask, d, g, xv = load3(delta_ptr, g_ptr, x_ptr, base, start, D, BLOCK, HAS_X)
            gp, _, _ = _grad_wrt_p(d, xv, g, s, eps, lo, hi, gs, gn2, NORM, HAS_X, OUT_DTYPE)
            acc += tl.where(mask, d * gp, 0.0)
        coef = tl.where(l2_active, tl.sum(acc, axis=0) * s * s * s / (eps * eps), 0.0)
    for start in range(0, D, BLOCK):
        offs, mask, d, g, xv = load3(delta_ptr, g_ptr, x_ptr, base, start, D, BLOCK, HAS_X)
        gp, inside, r = _grad_wrt_p(d, xv, g, s, eps, lo, hi, gs, gn2, NORM, HAS_X, OUT_DTYPE)
        if NORM == 1:
            gd = tl.where((d > -eps) & (d < eps), gp, 0.0)
        elif NORM == 2:
            gd = tl.where(l2_active, s * gp - coef * d, gp)
        else:
            gd = gp
        tl.store(gd_ptr + base + offs, gd.to(OUT_DTYPE), mask=mask)
        if NEED_GX:
            gx = tl.where(inside, g, -gn2 * r)
            tl.store(gx_ptr + base + offs, gx.to(OUT_DTYPE), mask=mask)
