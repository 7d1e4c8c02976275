"""The one way gatfast turns gradients into an optimiser step, shared by GATStep and every
training method (gatfast.train.methods): guard -> gradients into .grad -> gradient hook ->
GradScaler or plain optimiser step -> zero_grad.

A training engine sets two hooks (None for plain use, and then nothing synchronises
with the host): `step_guard(finite: 0-dim bool tensor) -> bool` decides whether the
optimisers step (gatfast's engine skips non-finite steps, all processes alike), and
`gradient_hook()` runs once the gradients sit in .grad, before the optimisers (the
engine averages them across processes there).
"""

from __future__ import annotations

import torch

from gatfast.ops import checks


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimiser updates, in the order gradients are paired with them."""
    return [p for p in module.parameters() if p.requires_grad]


class Update:
    """AMP's loss scaling and the optimiser step for one or more (module, optimiser) pairs.
    amp="fp16" scales losses with a GradScaler (made on first use for the batch's device,
    or passed in), unscales before stepping, skips a step whose gradients overflow and
    adjusts the scale; amp=None or "bf16" steps plainly."""

    def __init__(self, amp: str | None = None, grad_scaler: torch.amp.GradScaler | None = None):
        self.amp = checks.amp(amp)
        if grad_scaler is not None and amp != "fp16":
            raise ValueError("grad_scaler is for amp='fp16' only")
        self.grad_scaler = grad_scaler
        self.step_guard = None
        self.gradient_hook = None

    def prepare(self, device: torch.device) -> None:
        """Make the GradScaler for `device` on the first fp16 step."""
        if self.amp == "fp16" and self.grad_scaler is None:
            self.grad_scaler = torch.amp.GradScaler(device.type)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.amp != "fp16" else self.grad_scaler.scale(loss)

    def apply(self, pairs, losses) -> bool:
        """pairs: (module, gradients of its trainable parameters, optimiser). Returns False
        when the step guard refused the step (the gradients are then dropped)."""
        if self.step_guard is not None and not self.step_guard(torch.stack([l.isfinite() for l in losses]).all()):
            return False
        for module, grads, _ in pairs:
            for p, grad in zip(trainable_parameters(module), grads):
                p.grad = grad
        if self.gradient_hook is not None:
            self.gradient_hook()
        if self.amp == "fp16":  # unscale, skip the optimisers on inf/NaN, adjust the scale
            for _, _, opt in pairs:
                self.grad_scaler.step(opt)
            self.grad_scaler.update()
        else:
            for _, _, opt in pairs:
                opt.step()
        for _, _, opt in pairs:
            opt.zero_grad(set_to_none=True)
        return True

    def skipped(self, applied: bool, device: torch.device) -> dict[str, torch.Tensor]:
        """The `skipped` metric an engine with a step guard reads (nothing without one)."""
        if self.step_guard is None:
            return {}
        return {"skipped": torch.tensor(0.0 if applied else 1.0, device=device)}

    def state_dict(self) -> dict:
        return {"grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        if state.get("grad_scaler") is not None:
            self.grad_scaler = torch.amp.GradScaler(device.type)
            self.grad_scaler.load_state_dict(state["grad_scaler"])
