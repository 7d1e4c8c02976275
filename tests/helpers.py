"""Shared tolerances and input builders for the op tests."""

import torch

# Results are computed in float32 and rounded once to the storage dtype, so backends
# may differ from the reference by about one unit in the last place of that dtype.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-6, rtol=2e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}
# Gradients pass through more arithmetic (and are stored in the storage dtype).
GRAD_TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def close(actual, expected, dtype, tol=TOL):
    torch.testing.assert_close(actual.double(), expected.double(), **tol[dtype])


def images(shape, dtype, device, seed=0, scale=0.5):
    """x in [0, 1] and delta of about `scale` magnitude, with some samples inside and
    some outside any eps-ball the tests use."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    delta = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    # Shrink every other sample far inside the ball, so both branches of l2 run.
    delta[::2] *= 1e-3
    return x.to(dtype=dtype, device=device), delta.to(dtype=dtype, device=device)


def non_contiguous(t):
    """The same values in a tensor whose memory is not contiguous."""
    wide = torch.empty(t.shape + (2,), dtype=t.dtype, device=t.device)
    wide[..., 0] = t
    out = wide[..., 0]
    assert not out.is_contiguous()
    return out
