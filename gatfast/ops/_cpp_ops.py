"""The C++ ops (gatfast::*, registered by gatfast._C, autograd included, see
csrc/autograd.cpp): their fake implementations, and the adapter the `cpp` and
`cuda` backends run."""

from __future__ import annotations

import torch

from gatfast.ops import _autograd

_ops = torch.ops.gatfast

torch.library.register_fake("gatfast::perturb_fwd")(_autograd.fake_perturb_fwd)
torch.library.register_fake("gatfast::perturb_bwd")(_autograd.fake_perturb_bwd)
torch.library.register_fake("gatfast::pgd_step")(_autograd.fake_pgd_step)
torch.library.register_fake("gatfast::pgd_step_out")(_autograd.fake_pgd_step_out)
torch.library.register_fake("gatfast::clean_adv_loss_fwd")(_autograd.fake_clean_adv_loss_fwd)

impl = _autograd.OpFamily(_ops.perturb_fwd, _ops.pgd_step, _ops.pgd_step_out, _ops.clean_adv_loss_fwd)
