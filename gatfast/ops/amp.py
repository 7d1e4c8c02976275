"""Mixed precision as gatfast's step, methods and attacks use it: an amp setting (None,
"bf16" or "fp16") as an autocast context, and half-precision logits back in float32
for the losses."""

from __future__ import annotations

import contextlib

import torch


def autocast(amp: str | None, device: torch.device):
    """The autocast context of an amp setting (None: a no-op)."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Autocast's half-precision logits as float32 for the loss; float32/float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
