"""Training methods on one engine. Each method owns one training update, `step(x, y)`,
returning 0-dim device tensors (no host synchronisation); the engine (gatfast.train.engine)
gives every method the same data, model, optimiser and schedule, so comparisons are fair.

- standard: cross-entropy on clean inputs.
- fgsm_rs:  FGSM from a uniform random start, step 1.25 * eps (Wong, Rice and Kolter,
            2020), with their guard against catastrophic overfitting: after each epoch,
            PGD accuracy on a fixed training batch; a collapse restores the best epoch's
            weights and stops training.
- pgd_at:   PGD with k steps from a random start, training on the adversarial batch
            alone (Madry et al., 2018).
- trades:   CE(clean) + beta * KL(C(x) || C(x_adv)), x_adv maximising the KL by PGD
            (Zhang et al., 2019).
- gat:      the Generative Adversarial Trainer through gatfast.gat.GATStep.
- crown_ibp: certified training (Zhang et al., 2020): kappa * CE(clean) + (1 - kappa) *
            CE(the worst-case logits that the bounds allow), the bound beta * CROWN-IBP +
            (1 - beta) * IBP, kappa and beta moving with the eps ramp.
- ibp:      its beta = 0 case, interval bounds alone (Gowal et al., 2018).
- gaussian: CE on inputs with Gaussian noise of standard deviation sigma (Cohen, Rosenfeld
            and Kolter, 2019): the base model of randomized smoothing.

Training examples are crafted with the classifier in its current (training) mode, as
Madry et al., Wong et al. and the GAT step's pass 1 do.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from gatfast import certify, ops
from gatfast.attacks import frozen, pgd
from gatfast.gat.step import GATStep
from gatfast.gat.update import Update, trainable_parameters
from gatfast.ops import checks as _checks
from gatfast.ops.amp import autocast
from gatfast.ops.ball import random_start


@torch.no_grad()
def _clean_logits(classifier, x, autocast):
    """Logits of the clean batch for the accuracy metric, in eval mode: a training-mode
    forward would move BatchNorm's running statistics."""
    was_training = classifier.training
    classifier.eval()
    try:
        with autocast:
            return classifier(x)
    finally:
        classifier.train(was_training)


def _metrics(loss, logits_clean, logits_adv, y, **extra):
    with torch.no_grad():
        out = {"loss_classifier": loss.detach(),
               "acc_clean": (logits_clean.argmax(1) == y).float().mean()}
        if logits_adv is not None:
            out["acc_adv"] = (logits_adv.argmax(1) == y).float().mean()
        out.update({k: v.detach() for k, v in extra.items()})
    return out


class Method:
    """One classifier, one optimiser, optional AMP; subclasses define `_loss`."""

    name = "method"

    def __init__(self, classifier: nn.Module, optimizer: torch.optim.Optimizer, *, eps: float, norm: str = "linf",
                 amp: str | None = None):
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
        self.classifier, self.optimizer = classifier, _checks.optimizer(optimizer, "optimizer")
        self.norm = _checks.norm(norm, allow_none=False)
        self.eps = _checks.eps(eps, self.norm)
        self.amp = _checks.amp(amp)
        # AMP's loss scaling and the optimiser step, with the engine's step_guard and
        # gradient_hook: the same path as GATStep's (gatfast.gat.update).
        self.update = Update(amp)

    def set_eps(self, eps: float) -> None:
        """The engine's eps schedule (eps warm-up) moves the attack budget here."""
        self.eps = eps

    def autocast(self, device):
        return autocast(self.amp, device)

    def modules(self) -> dict[str, nn.Module]:
        return {"classifier": self.classifier}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"classifier": self.optimizer}

    def _loss(self, x, y):
        raise NotImplementedError

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        y = y.long()
        loss, metrics = self._loss(x, y)
        self.update.prepare(x.device)
        grads = torch.autograd.grad(self.update.scale(loss), trainable_parameters(self.classifier),
                                    allow_unused=True)
        applied = self.update.apply([(self.classifier, grads, self.optimizer)], [loss.detach()])
        metrics.update(self.update.skipped(applied, x.device))
        return metrics

    def end_epoch(self, epoch: int) -> str | None:
        """Called after each epoch; a string stops training with that message."""
        return None

    def epoch_metrics(self) -> dict:
        """What end_epoch measured, for the epoch's log record: nothing, by default."""
        return {}

    def cost_key(self):
        """What a step's cost depends on beyond the batch (gatfast.train.cost counts each
        distinct key once): nothing, for a method whose every step does the same work."""
        return None

    def state_dict(self) -> dict:
        """What the method keeps beyond modules and optimisers (saved in checkpoints)."""
        return self.update.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.update.load_state_dict(state, next(self.classifier.parameters()).device)


class Standard(Method):
    name = "standard"

    def _loss(self, x, y):
        with self.autocast(x.device):
            logits = self.classifier(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, _metrics(loss, logits, None, y)


class PGDAT(Method):
    name = "pgd_at"

    def __init__(self, classifier, optimizer, *, eps, norm="linf", amp=None, steps: int = 10,
                 step_size: float | None = None):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        self.steps = _checks.count(steps, "steps")
        self.step_size = None if step_size is None else _checks.positive(step_size, "step_size")

    def _loss(self, x, y):
        with self.autocast(x.device):
            x_adv = pgd(self.classifier, x, y, eps=self.eps, norm=self.norm, steps=self.steps,
                        step_size=self.step_size)
            logits_adv = self.classifier(x_adv)
        loss = F.cross_entropy(logits_adv.float(), y)
        return loss, _metrics(loss, _clean_logits(self.classifier, x, self.autocast(x.device)), logits_adv, y)


class FGSMRS(Method):
    """FGSM from a random start; after each epoch, PGD-10 accuracy on a fixed training batch
    (the probe). If it falls by more than `collapse` (absolute) below the best so far, the
    model overfitted catastrophically: the best epoch's weights come back and training stops."""

    name = "fgsm_rs"

    def __init__(self, classifier, optimizer, *, eps, norm="linf", amp=None, step_scale: float = 1.25,
                 probe: tuple[torch.Tensor, torch.Tensor] | None = None, collapse: float = 0.2):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        self.step_scale = _checks.positive(step_scale, "step_scale")
        self.step_size = self.step_scale * self.eps
        self.probe, self.collapse = probe, _checks.fraction(collapse, "collapse")
        self.best_accuracy, self.best_epoch, self.best_state = -1.0, -1, None
        self.last_probe = None  # the last epoch's PGD-10 probe accuracy, for the log

    def set_eps(self, eps):
        super().set_eps(eps)
        self.step_size = self.step_scale * eps

    def _loss(self, x, y):
        x0 = random_start(x.detach(), self.eps, self.norm).requires_grad_(True)
        with frozen(self.classifier), self.autocast(x.device):
            ce = F.cross_entropy(self.classifier(x0).float(), y)
        (grad,) = torch.autograd.grad(ce, [x0])
        x_adv = ops.pgd_step(x0.detach(), grad, x.detach(), self.step_size, self.eps, self.norm)
        with self.autocast(x.device):
            logits_adv = self.classifier(x_adv)
        loss = F.cross_entropy(logits_adv.float(), y)
        return loss, _metrics(loss, _clean_logits(self.classifier, x, self.autocast(x.device)), logits_adv, y)

    def probe_accuracy(self) -> float:
        x, y = self.probe
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            x_adv = pgd(self.classifier, x, y, eps=self.eps, norm=self.norm, steps=10,
                        rng=torch.Generator(x.device).manual_seed(0))
            with torch.no_grad():
                return float((self.classifier(x_adv).argmax(1) == y).float().mean())
        finally:
            self.classifier.train(was_training)

    def end_epoch(self, epoch):
        if self.probe is None:
            return None
        accuracy = self.last_probe = self.probe_accuracy()
        if accuracy < self.best_accuracy - self.collapse:
            self.classifier.load_state_dict(self.best_state)
            return (f"fgsm_rs: catastrophic overfitting at epoch {epoch} (PGD-10 accuracy on a training batch "
                    f"fell from {self.best_accuracy:.2f} to {accuracy:.2f}); restored the weights of epoch "
                    f"{self.best_epoch} and stopped")
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            self.best_state = copy.deepcopy(self.classifier.state_dict())
        return None

    def epoch_metrics(self):
        # logged every epoch: overfitting from the first epoch on never falls from a best, so
        # the guard cannot see it; a PGD-10 accuracy near 0 beside a high acc_adv shows it
        return {} if self.last_probe is None else {"probe_pgd10": self.last_probe}

    def state_dict(self):
        return {**super().state_dict(), "best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.best_accuracy, self.best_epoch = state["best_accuracy"], state["best_epoch"]
        self.best_state = state["best_state"]


class TRADES(Method):
    name = "trades"

    def __init__(self, classifier, optimizer, *, eps, norm="linf", amp=None, steps: int = 10,
                 step_size: float | None = None, beta: float = 6.0):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        self.steps = _checks.count(steps, "steps")
        self.fixed_step_size = None if step_size is None else _checks.positive(step_size, "step_size")
        self.beta = _checks.nonnegative(beta, "beta")
        self.set_eps(self.eps)

    def set_eps(self, eps):
        """The attack's step follows eps (2.5 eps / steps) unless a fixed step_size was given."""
        super().set_eps(eps)
        self.step_size = 2.5 * eps / self.steps if self.fixed_step_size is None else self.fixed_step_size

    def _adversarial(self, x, p_clean):
        x0 = x.detach()
        x_adv = (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)
        with frozen(self.classifier):
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                with self.autocast(x.device):
                    logits = self.classifier(x_adv)
                kl = F.kl_div(F.log_softmax(logits.float(), 1), p_clean, reduction="sum")
                (grad,) = torch.autograd.grad(kl, [x_adv])
                x_adv = ops.pgd_step(x_adv.detach(), grad, x0, self.step_size, self.eps, self.norm)
        return x_adv

    def _loss(self, x, y):
        with torch.no_grad(), self.autocast(x.device):
            p_clean = F.softmax(self.classifier(x).float(), 1)
        x_adv = self._adversarial(x, p_clean)
        with self.autocast(x.device):
            logits_clean, logits_adv = self.classifier(x), self.classifier(x_adv)
        ce = F.cross_entropy(logits_clean.float(), y)
        kl = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits_clean.float(), 1), reduction="batchmean")
        loss = ce + self.beta * kl
        return loss, _metrics(loss, logits_clean, logits_adv, y)


class GAT(Method):
    """The Generative Adversarial Trainer: a GATStep over classifier and generator."""

    name = "gat"

    def __init__(self, classifier, optimizer, generator: nn.Module, generator_optimizer, *, eps,
                 norm="linf", amp=None, alpha: float = 0.5, c_g: float = 0.0, generator_steps: int = 1,
                 generator_updates: int = 1, cuda_graph: bool = False, random_init: bool = False,
                 single_pass: bool = False):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        self.generator, self.generator_optimizer = generator, generator_optimizer
        self.gat_step = GATStep(classifier, generator, optimizer, generator_optimizer, eps=eps, norm=norm,
                                alpha=alpha, c_g=c_g, generator_steps=generator_steps,
                                generator_updates=generator_updates, amp=amp, cuda_graph=cuda_graph,
                                random_init=random_init, single_pass=single_pass)
        self.update = self.gat_step.update  # one update object: the engine's hooks reach the step

    def set_eps(self, eps):
        super().set_eps(eps)
        self.gat_step.eps = eps
        if hasattr(self.generator, "eps"):  # gatfast's generator scales its output by eps
            self.generator.eps = eps

    def modules(self):
        return {"classifier": self.classifier, "generator": self.generator}

    def optimizers(self):
        return {"classifier": self.optimizer, "generator": self.generator_optimizer}

    def step(self, x, y):
        self.generator.train()
        return self.gat_step.step(x, y)


class CROWNIBP(Method):
    """Certified training on sound bounds of the margins logit_y - logit_j over the whole
    eps-ball (gatfast.certify). The robust term is the cross-entropy of the worst-case
    logits the bounds allow (0 for the true class, minus each margin's lower bound for the
    others), which bounds the cross-entropy at every point of the ball from above.

    kappa (the clean term's weight) and beta (CROWN-IBP's share of the bound) move linearly
    from their start to their end value as eps ramps up to its final value (the engine's
    --eps-warmup): the papers' schedule. The bounds are computed in float32 (no AMP) on the
    classifier as it trains (BatchNorm in training mode has no fixed function to bound)."""

    name = "crown_ibp"
    defaults = {"kappa": (1.0, 0.0), "beta": (1.0, 0.0)}

    def __init__(self, classifier, optimizer, *, eps, norm="linf", amp=None, kappa: tuple | None = None,
                 beta: tuple | None = None):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        try:  # a model certify cannot bound is refused here, before training
            certify.chain(classifier)
        except TypeError as e:
            raise TypeError(f"classifier: {e}") from None
        self.kappa = self._schedule(kappa, "kappa")
        self.beta = self._schedule(beta, "beta")
        self.final_eps = self.eps

    def _schedule(self, value, name):
        value = self.defaults[name] if value is None else value
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise TypeError(f"{name} must be a (start, end) pair, got {value!r}")
        return tuple(_checks.fraction(v, name) for v in value)

    def weights(self) -> tuple[float, float]:
        """(kappa, beta) at the current eps: the share of the ramp done moves them."""
        ramp = min(self.eps / self.final_eps, 1.0)
        (k0, k1), (b0, b1) = self.kappa, self.beta
        return k0 + (k1 - k0) * ramp, b0 + (b1 - b0) * ramp

    def cost_key(self):
        return self.weights()[1] > 0  # with beta at 0 the linear bound is not computed

    def _loss(self, x, y):
        kappa, beta = self.weights()
        with self.autocast(x.device):
            logits = self.classifier(x)
        spec = certify.margin_spec(y, logits.shape[1], x.dtype)
        if beta > 0:  # both bounds from one IBP pass
            linear, interval = certify.crown.lower_bounds(self.classifier, x, self.eps, spec, norm=self.norm)
            lower = beta * linear + (1 - beta) * interval
        else:
            lower = certify.ibp.bounds(self.classifier, x, self.eps, norm=self.norm, spec=spec)[0]
        worst = torch.cat([lower.new_zeros(len(y), 1), -lower], dim=1)  # the true class in column 0
        robust = F.cross_entropy(worst, torch.zeros_like(y))
        loss = kappa * F.cross_entropy(logits.float(), y) + (1 - kappa) * robust
        with torch.no_grad():
            verified = (lower > 0).all(dim=1).float().mean()
        return loss, _metrics(loss, logits, None, y, loss_robust=robust, acc_verified=verified,
                              kappa=x.new_tensor(kappa), beta=x.new_tensor(beta))


class IBP(CROWNIBP):
    """Interval bound propagation training (Gowal et al., 2018): CROWN-IBP with beta = 0,
    kappa from 1 to 0.5 over the eps ramp as Gowal et al. schedule it."""

    name = "ibp"
    defaults = {"kappa": (1.0, 0.5), "beta": (0.0, 0.0)}


class Gaussian(Method):
    """Cross-entropy on x + N(0, sigma^2) noise (not clamped, as Cohen et al.): the base model of
    randomized smoothing (gatfast.certify.smoothing), trained at the sigma it will be
    smoothed with (Cohen, Rosenfeld and Kolter, 2019)."""

    name = "gaussian"

    def __init__(self, classifier, optimizer, *, eps, norm="l2", amp=None, sigma: float = 0.25):
        super().__init__(classifier, optimizer, eps=eps, norm=norm, amp=amp)
        self.sigma = _checks.positive(sigma, "sigma")

    def _loss(self, x, y):
        with self.autocast(x.device):
            logits = self.classifier(x + self.sigma * torch.randn_like(x))
        loss = F.cross_entropy(logits.float(), y)
        with torch.no_grad():
            noisy = (logits.argmax(1) == y).float().mean()
        return loss, _metrics(loss, _clean_logits(self.classifier, x, self.autocast(x.device)), None, y,
                              acc_noisy=noisy)


METHODS = {cls.name: cls for cls in (Standard, FGSMRS, PGDAT, TRADES, GAT, CROWNIBP, IBP, Gaussian)}
