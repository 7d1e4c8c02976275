"""The `triton` backend: the Triton ops of gatfast.ops.kernels with autograd (shared
with the C++ ops) registered on them. Imported only when that backend is used."""

from __future__ import annotations

from gatfast.ops import _autograd
from gatfast.ops.kernels import ops as _k

_autograd.register_perturb_autograd(_k.perturb_fwd, _k.perturb_bwd)
_autograd.register_loss_autograd(_k.clean_adv_loss_fwd)

impl = _autograd.OpFamily(_k.perturb_fwd, _k.pgd_step, _k.pgd_step_out, _k.clean_adv_loss_fwd)
