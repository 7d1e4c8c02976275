"""Certified bounds: sound lower bounds on robust accuracy, beside the attacks' upper ones.

- `bounds(model, x, eps, norm=..., method=..., spec=...)`: interval bound propagation
  (ibp.py; Gowal et al. 2018), CROWN-IBP (crown.py; Zhang et al. 2020) or CROWN (crown.py;
  Zhang et al. 2018) on the model's outputs, or on spec @ outputs; differentiable in the
  model's parameters (certified training backpropagates through them);
- `verified_accuracy(model, x, y, eps, ...)`: the share of images whose every margin
  logit_y - logit_j has a positive lower bound;
- `margin_spec(y, num_classes)`: the specification matrix of those margins;
- `Residual(branch, shortcut)`: a residual block, the sum of two chains of one input, for
  a model's `as_sequential()` (the ResNets' blocks read themselves as one);
- `smoothed_certify(model, x, y, sigma, ...)`: randomized smoothing's certified L2 radii
  (smoothing.py; Cohen, Rosenfeld and Kolter 2019).

Depends on torch and gatfast.ops only. Why own code: auto_LiRPA, the reference library for
these bounds, supports no torch this project runs (README, Dependencies).
"""

from gatfast.certify import crown, ibp, smoothing
from gatfast.certify.smoothing import Smoothed, smoothed_certify
from gatfast.certify.layers import SUPPORTED, Residual, chain
from gatfast.certify.verify import METHODS, margin_spec, verified, verified_accuracy

BOUNDS = {"ibp": ibp.bounds, "crown-ibp": crown.bounds, "crown": crown.crown_bounds}


def bounds(model, x, eps, *, norm="linf", method="ibp", lo=0.0, hi=1.0, spec=None):
    """Sound lower and upper bounds on model(x') (or spec @ model(x'), spec of shape
    (N, K, outputs)) for every x' in the eps-ball of `norm` around x inside [lo, hi]:
    method "ibp" (ibp.py), "crown-ibp" or "crown" (crown.py)."""
    if method not in BOUNDS:
        raise ValueError(f"method must be one of {', '.join(BOUNDS)}, got {method!r}")
    return BOUNDS[method](model, x, eps, norm=norm, lo=lo, hi=hi, spec=spec)


__all__ = ["BOUNDS", "METHODS", "Residual", "SUPPORTED", "Smoothed", "bounds", "chain", "crown", "ibp", "margin_spec",
           "smoothed_certify", "smoothing", "verified", "verified_accuracy"]
