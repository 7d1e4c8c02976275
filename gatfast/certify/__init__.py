"""Certified bounds: sound lower bounds on robust accuracy, beside the attacks' upper ones.

- `bounds(model, x, eps, norm=..., spec=...)`: interval bound propagation (ibp.py; Gowal et
  al. 2018) on the model's outputs, or on spec @ outputs;
- `verified_accuracy(model, x, y, eps, ...)`: the share of images whose every margin
  logit_y - logit_j has a positive lower bound;
- `margin_spec(y, num_classes)`: the specification matrix of those margins.

Depends on torch and gatfast.ops only. Why own code: auto_LiRPA, the reference library for
these bounds, supports no torch this project runs (README, Dependencies).
"""

from gatfast.certify.ibp import bounds
from gatfast.certify.layers import SUPPORTED, chain
from gatfast.certify.verify import margin_spec, verified, verified_accuracy

__all__ = ["SUPPORTED", "bounds", "chain", "margin_spec", "verified", "verified_accuracy"]
