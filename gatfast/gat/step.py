"""GATStep: one fused generator-defender update of the Generative Adversarial Trainer.

Math, with classifier C, generator G and batch (x, y):
  g     = d CE(C(x), y) / dx
  x_adv = perturb(x, G(x, g), eps, norm)
  L_C   = alpha * CE(C(x), y) + (1 - alpha) * CE(C(x_adv), y)
  L_G   = -CE(C(x_adv), y) + c_g * mean ||x_adv - x||^2
Both optimisers step on gradients taken at the same parameters (a simultaneous update),
with two classifier forwards and two backwards:
  pass 1: one backward of alpha * CE(C(x), y) gives C's clean-term gradients and g;
  pass 2: one backward of (1 - alpha) * CE(C(x_adv), y) + c_g * penalty gives C its
          adversarial term and G exactly dL_G/dtheta_G, because perturb multiplies the
          gradient reaching delta through x_adv by -1 / (1 - alpha) (and leaves the one
          through the penalty alone).
alpha = 1 leaves C no adversarial term; then pass 2 differentiates L_G for G alone.

Learned multi-step attack (generator_steps = T > 1, as in L2L): the generator is applied
T times, each time to the current adversarial image and a fresh input gradient there:
  x_0 = x;  x_t = perturb(x, (x_{t-1} - x) + G(x_{t-1}, g_t), eps, norm),
  g_t = d CE(C(x_{t-1}), y) / d x_{t-1}  (a constant for G, like the gradient in pass 1).
Steps 1..T-1 cost one extra classifier forward and input-only backward each (none for
generator input "image"); pass 2 runs on x_T and gives G its gradient through all T
outputs (only the last perturb carries grad_scale, so the sign flip is applied once).
random_init=True starts x_0 at a uniform point of the eps-ball (with pass 1's gradient at x
for G's first step): diversity at no extra classifier pass, the way a random start keeps
FGSM training from overfitting to one attack.
generator_updates = k > 1 adds k - 1 generator-only updates against the current
classifier before the simultaneous one (the literal algorithm's order, more often).

BatchNorm: both passes run the classifier in training mode, so running statistics are
updated twice per step, first with the clean batch and then with the adversarial one
(as the literal algorithm's defender forward would).

Single pass (single_pass=True): a generator that reads the image alone (input="image")
needs no input gradient, so x_adv exists before the classifier runs, and one forward over
cat(x, x_adv) and one backward of clean_adv_loss(clean half, adversarial half) + c_g *
penalty give both networks the same gradients as the two passes (the grad_scale trick
still flips the generator's). A classifier with BatchNorm then normalises the clean and
adversarial halves together and updates its running statistics once, with the mixed
batch: a different model from the two-pass step's, which is why it is opt-in.

AMP: amp="bf16" runs both networks under autocast in bfloat16; amp="fp16" in float16
with a GradScaler (both passes' losses are scaled by the same factor; a step whose
gradients overflow is skipped by both optimisers and the scale shrinks). The losses
are computed in float32 either way.

CUDA graphs (cuda_graph=True, CUDA tensors only): the first call runs eagerly on a side
stream (a real update that also creates the optimisers' state); the second captures the
whole step (both passes, both optimiser steps) into one graph and replays it; later calls
copy the batch into the graph's static buffers and replay. Every call is one real update,
equal to the uncaptured step's. Needs optimisers that run inside a graph (Adam/AdamW
with capturable=True, or SGD), a fixed batch shape, no step_guard, and not amp="fp16"
(GradScaler decides on the host whether to step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gatfast import ops
from gatfast.gat.update import Update
from gatfast.gat.update import trainable_parameters as _params
from gatfast.ops import checks as _checks
from gatfast.ops.amp import autocast
from gatfast.ops.amp import full_precision as _full_precision
from gatfast.ops.ball import random_start


def reads_gradient(generator: nn.Module) -> bool:
    """Whether G is called as G(x, grad) (the default for a module that does not say) or
    as G(x): gatfast's PerturbationGenerator answers by its input, your own module by a
    `reads_gradient` attribute."""
    return bool(getattr(generator, "reads_gradient", True))


def generator_bound(generator: nn.Module, norm: str) -> str:
    """The bound G's output already respects: PerturbationGenerator's `bound`; a module of
    your own is taken as bounding nothing, and the step projects its output onto the
    eps-ball of `norm` (perturb)."""
    return getattr(generator, "bound", norm)


class GATStep:
    """One call of `step(x, y)` performs a whole GAT update and returns 0-dim device
    tensors (no host synchronisation): loss_classifier, loss_generator, acc_clean,
    acc_adv, perturbation_norm (mean L2 norm of x_adv - x)."""

    def __init__(self, classifier: nn.Module, generator: nn.Module, opt_classifier, opt_generator, *,
                 eps: float, norm: str = "linf", alpha: float = 0.5, c_g: float = 0.0,
                 generator_steps: int = 1, generator_updates: int = 1, amp: str | None = None,
                 grad_scaler: torch.amp.GradScaler | None = None, cuda_graph: bool = False,
                 random_init: bool = False, single_pass: bool = False):
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
        if not isinstance(generator, nn.Module):
            raise TypeError(f"generator must be a torch.nn.Module (gatfast.PerturbationGenerator or your own), "
                            f"got {type(generator).__name__}")
        _checks.optimizer(opt_classifier, "opt_classifier")
        _checks.optimizer(opt_generator, "opt_generator")
        self.norm = _checks.norm(norm, allow_none=False)
        self.eps = _checks.eps(eps, self.norm)
        bound = generator_bound(generator, self.norm)
        if bound in ("linf", "l2") and bound != self.norm:
            raise ValueError(f"norm {self.norm!r} does not match the generator's bound {bound!r}")
        self.alpha = _checks.alpha(alpha)
        self.c_g = _checks.nonnegative(c_g, "c_g")
        self.generator_steps = _checks.count(generator_steps, "generator_steps")
        self.generator_updates = _checks.count(generator_updates, "generator_updates")
        self.random_init = bool(random_init)
        self.single_pass = bool(single_pass)
        self.reads_gradient = reads_gradient(generator)
        if self.single_pass and self.reads_gradient:
            raise ValueError("single_pass=True needs a generator with input='image' (or, for your own generator, "
                             "reads_gradient = False): x_adv must exist before the classifier's forward")
        if self.single_pass and self.alpha == 1:
            raise ValueError("single_pass=True needs alpha < 1: with alpha = 1 the classifier has no adversarial "
                             "term to share a pass with")
        self.classifier, self.generator = classifier, generator
        self.opt_classifier, self.opt_generator = opt_classifier, opt_generator
        # The penalty bound is the paper's soft one: no projection, the box clamp only.
        self._perturb_norm = None if bound == "penalty" else self.norm
        # AMP's loss scaling, the optimiser step, and a training engine's step_guard and
        # gradient_hook (gatfast.gat.update), shared with the method that wraps this step.
        self.update = Update(amp, grad_scaler)
        self.amp = amp
        self.cuda_graph = bool(cuda_graph)
        if self.cuda_graph:
            if amp == "fp16":
                raise ValueError("cuda_graph=True does not work with amp='fp16': the GradScaler decides on the "
                                 "host whether to step; use amp='bf16'")
            for name, opt in (("opt_classifier", opt_classifier), ("opt_generator", opt_generator)):
                if "capturable" in opt.defaults and not opt.defaults["capturable"]:
                    raise ValueError(f"cuda_graph=True needs {name} created with capturable=True "
                                     f"(e.g. torch.optim.Adam(params, lr, capturable=True))")
        self._graph = None
        self._calls = 0

    @property
    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return self.update.grad_scaler

    @property
    def step_guard(self):
        return self.update.step_guard

    @step_guard.setter
    def step_guard(self, guard):
        self.update.step_guard = guard

    @property
    def gradient_hook(self):
        return self.update.gradient_hook

    @gradient_hook.setter
    def gradient_hook(self, hook):
        self.update.gradient_hook = hook

    def _autocast(self, device: torch.device):
        return autocast(self.amp, device)

    def _scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.update.scale(loss)

    def _check_batch(self, x, y):
        _checks.tensor(x, "x")
        _checks.labels(y, "y", x, "x")
        self.update.prepare(x.device)

    def _input_gradient(self, x_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d CE(C(x_t), y) / d x_t, a constant for everything downstream (input-only backward)."""
        x_in = x_t.detach().requires_grad_(True)
        with self._autocast(x_t.device):
            logits = self.classifier(x_in)
        (g,) = torch.autograd.grad(self._scale(F.cross_entropy(_full_precision(logits), y)), [x_in])
        return g

    def _adversarial(self, x0: torch.Tensor, y: torch.Tensor, g: torch.Tensor, grad_scale: float):
        """x_adv and its squared distance to x0 after generator_steps applications of G,
        differentiable in G's parameters; only the last perturb carries grad_scale."""
        x_t = random_start(x0, self.eps, self._perturb_norm or "linf") if self.random_init else x0
        for t in range(self.generator_steps):
            if t > 0 and self.reads_gradient:
                g = self._input_gradient(x_t, y)
            with self._autocast(x0.device):
                delta = self._delta(x_t, g)
            total = delta if x_t is x0 else (x_t - x0) + delta
            if t == self.generator_steps - 1:
                return ops.perturb_with_norm(x0, total, self.eps, self._perturb_norm, grad_scale=grad_scale)
            x_t = ops.perturb(x0, total, self.eps, self._perturb_norm)

    def _delta(self, x_t: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        """G's perturbation at x_t, in the input's dtype (perturb runs in it)."""
        delta = self.generator(x_t, g.detach()) if self.reads_gradient else self.generator(x_t)
        if not isinstance(delta, torch.Tensor) or delta.shape != x_t.shape:
            raise ValueError(f"the generator must return a perturbation of the input's shape {tuple(x_t.shape)}, "
                             f"got {tuple(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__}")
        return delta.to(x_t.dtype)

    def gradients(self, x: torch.Tensor, y: torch.Tensor):
        """The step's gradients (classifier, generator) and metrics, without stepping.
        Under amp="fp16" the gradients are multiplied by the GradScaler's scale."""
        self._check_batch(x, y)
        if self.single_pass:
            return self._single_pass_gradients(x, y.long())
        C, alpha = self.classifier, self.alpha
        params_c, params_g = _params(C), _params(self.generator)
        y = y.long()

        # Pass 1: C's clean-term gradients and the input gradient, from one backward (a
        # generator that reads the image alone needs no input gradient).
        need_g = self.reads_gradient
        x_in = x.detach().requires_grad_(need_g)
        with self._autocast(x.device):
            logits_clean = C(x_in)
        ce_clean = F.cross_entropy(_full_precision(logits_clean), y)
        inputs = [x_in] if need_g else []
        g, grads_c = None, [None] * len(params_c)
        if alpha > 0:
            grads = torch.autograd.grad(self._scale(alpha * ce_clean), inputs + params_c, allow_unused=True)
            g, grads_c = (grads[0] if need_g else None), list(grads[len(inputs):])
        elif need_g:
            (g,) = torch.autograd.grad(self._scale(ce_clean), [x_in])

        # Pass 2: the adversarial term for C and the whole generator gradient, from one backward.
        x0 = x.detach()
        grad_scale = -1.0 / (1.0 - alpha) if alpha < 1 else 1.0
        x_adv, sq_norm = self._adversarial(x0, y, g, grad_scale)
        with self._autocast(x.device):
            logits_adv = C(x_adv)
        ce_adv = F.cross_entropy(_full_precision(logits_adv), y)
        penalty = sq_norm.mean()
        if alpha < 1:
            loss2 = (1 - alpha) * ce_adv + self.c_g * penalty
            grads2 = torch.autograd.grad(self._scale(loss2), params_c + params_g, allow_unused=True)
            grads_adv_c, grads_g = grads2[: len(params_c)], list(grads2[len(params_c):])
            grads_c = [a if b is None else (b if a is None else a + b) for a, b in zip(grads_c, grads_adv_c)]
        else:
            grads_g = list(torch.autograd.grad(self._scale(-ce_adv + self.c_g * penalty), params_g, allow_unused=True))

        with torch.no_grad():
            metrics = {
                "loss_classifier": (alpha * ce_clean + (1 - alpha) * ce_adv).detach(),
                "loss_generator": (-ce_adv + self.c_g * penalty).detach(),
                "acc_clean": (logits_clean.argmax(1) == y).float().mean(),
                "acc_adv": (logits_adv.argmax(1) == y).float().mean(),
                "perturbation_norm": sq_norm.sqrt().mean(),
            }
        return grads_c, grads_g, metrics

    def _single_pass_gradients(self, x: torch.Tensor, y: torch.Tensor):
        """One forward over cat(x, x_adv), one backward of the fused clean+adversarial loss."""
        params_c, params_g = _params(self.classifier), _params(self.generator)
        x0, n = x.detach(), x.shape[0]
        x_adv, sq_norm = self._adversarial(x0, y, None, -1.0 / (1.0 - self.alpha))
        with self._autocast(x.device):
            logits = _full_precision(self.classifier(torch.cat([x0, x_adv])))
        logits_clean, logits_adv = logits[:n], logits[n:]
        loss_c, correct_clean, correct_adv = ops.clean_adv_loss(logits_clean, logits_adv, y, self.alpha)
        penalty = sq_norm.mean()
        grads = torch.autograd.grad(self._scale(loss_c + self.c_g * penalty), params_c + params_g,
                                    allow_unused=True)
        with torch.no_grad():
            ce_adv = F.cross_entropy(logits_adv.detach(), y)
            metrics = {
                "loss_classifier": loss_c.detach(),
                "loss_generator": -ce_adv + self.c_g * penalty.detach(),
                "acc_clean": correct_clean.float() / n,
                "acc_adv": correct_adv.float() / n,
                "perturbation_norm": sq_norm.detach().sqrt().mean(),
            }
        return list(grads[: len(params_c)]), list(grads[len(params_c):]), metrics

    def generator_gradients(self, x: torch.Tensor, y: torch.Tensor):
        """dL_G/dtheta_G alone, against the current classifier (a generator-only update)."""
        self._check_batch(x, y)
        y = y.long()
        x0 = x.detach()
        g = self._input_gradient(x0, y) if self.reads_gradient else None
        x_adv, sq_norm = self._adversarial(x0, y, g, 1.0)
        with self._autocast(x.device):
            logits_adv = self.classifier(x_adv)
        loss_g = -F.cross_entropy(_full_precision(logits_adv), y) + self.c_g * sq_norm.mean()
        grads = list(torch.autograd.grad(self._scale(loss_g), _params(self.generator), allow_unused=True))
        return grads, loss_g.detach()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """generator_updates - 1 generator-only updates, then one simultaneous update of
        both networks; returns the metrics of the simultaneous one (with `skipped` = 1.0
        when a step_guard refused it)."""
        if self.cuda_graph:
            return self._graphed_step(x, y)
        return self._eager_step(x, y)

    def _graphed_step(self, x, y):
        self._check_batch(x, y)
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs CUDA tensors, but x is on {x.device}; "
                             f"move the batch and both networks to a GPU, or use cuda_graph=False")
        if self.step_guard is not None or self.gradient_hook is not None:
            raise ValueError("cuda_graph=True cannot run a step_guard or gradient_hook (host-side code)")
        self._calls += 1
        if self._calls == 1:  # warm-up: a real, eager update on a side stream
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                metrics = self._eager_step(x, y)
            torch.cuda.current_stream(x.device).wait_stream(side)
            return metrics
        if self._graph is None:
            self._static_x, self._static_y = x.detach().clone(), y.detach().clone()
            for opt in (self.opt_classifier, self.opt_generator):
                opt.zero_grad(set_to_none=True)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_metrics = self._eager_step(self._static_x, self._static_y)
        elif x.shape != self._static_x.shape:
            raise ValueError(f"cuda_graph=True replays a fixed batch shape {tuple(self._static_x.shape)}; "
                             f"got {tuple(x.shape)} (drop the last partial batch)")
        else:
            self._static_x.copy_(x)
            self._static_y.copy_(y)
        self._graph.replay()
        return {k: v.clone() for k, v in self._static_metrics.items()}

    def _eager_step(self, x, y):
        for _ in range(self.generator_updates - 1):
            grads_g, loss_g = self.generator_gradients(x, y)
            self.update.apply([(self.generator, grads_g, self.opt_generator)], [loss_g])
        grads_c, grads_g, metrics = self.gradients(x, y)
        applied = self.update.apply([(self.classifier, grads_c, self.opt_classifier),
                               (self.generator, grads_g, self.opt_generator)],
                              [metrics["loss_classifier"], metrics["loss_generator"]])
        metrics.update(self.update.skipped(applied, x.device))
        return metrics
