"""What every attack shares: argument checks, the model put in eval mode with frozen
parameters while it runs, batching with a progress bar, and the margin loss."""

from __future__ import annotations

import contextlib
import itertools

import torch

from gatfast.ops import checks as _checks


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Parameters stop asking for gradients while an attack runs (the attack needs the
    input gradient only), and come back as they were, even on an exception."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def channels_last(model: torch.nn.Module):
    """The model's 4-D weights in channels-last memory order while the block runs (the
    same values; oneDNN's convolutions run ~1.35x faster so on the CPU here), then back
    to the tensors they were."""
    saved = [(t, t.data) for t in itertools.chain(model.parameters(), model.buffers())]
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        for t, data in saved:
            t.data = data


def _on_cpu(model: torch.nn.Module) -> bool:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first is None or first.device.type == "cpu"


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """The deployed model: eval mode (BatchNorm running statistics, no dropout) and frozen
    parameters, restored afterwards; on the CPU also `channels_last`, where it was
    measured to pay (GPUs: not yet)."""
    was_training = model.training
    model.eval()
    try:
        with frozen(model), (channels_last(model) if _on_cpu(model) else contextlib.nullcontext()):
            yield model
    finally:
        model.train(was_training)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best wrong logit minus the true logit, per sample
    (> 0 exactly when the sample is misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return wrong - true


check_eps = _checks.eps  # eps > 0, and <= 1 for linf (the rule every layer applies)


def check_batch(images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.tensor(images, "images")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    _checks.labels(labels, "labels", images)
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"images must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
                         f"gatfast models normalise inside")
    return images, labels.long()


@torch.no_grad()
def correct(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per image: does the deployed model (eval mode) classify it right; batch by batch."""
    with evaluating(model):
        return torch.cat([model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]
                          for i in range(0, len(labels), batch_size)])


class Attack:
    """An attack on a classifier of [0, 1] images: `attack(images, labels)` returns
    adversarial images of the same shape, each inside the threat model (the eps-ball of
    `norm` around its clean image, and the [0, 1] box). The model runs in eval mode with
    frozen parameters, batch by batch; `progress=True` shows a bar."""

    name = "attack"
    white_box = True

    def __init__(self, model: torch.nn.Module, *, eps: float, norm: str = "linf", batch_size: int = 500,
                 progress: bool = False):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.norm = _checks.norm(norm, allow_none=False)
        self.eps = check_eps(eps, self.norm)
        self.batch_size = _checks.count(batch_size, "batch_size")
        self.progress = bool(progress)

    def _attack(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """The attack and its budget in words, for the threat model of a report."""
        return f"{self.name} ({self.norm}, eps {self.eps:g})"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = check_batch(images, labels)
        out = []
        starts = range(0, images.shape[0], self.batch_size)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=images.shape[0], desc=self.name, unit="img", leave=False, dynamic_ncols=True)
        try:
            with evaluating(self.model):
                for i in starts:
                    xb, yb = images[i:i + self.batch_size].detach(), labels[i:i + self.batch_size]
                    out.append(self._attack(xb, yb).detach())
                    if bar is not None:
                        bar.update(xb.shape[0])
        finally:
            if bar is not None:
                bar.close()
        return torch.cat(out)
