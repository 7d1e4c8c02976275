"""The GAT step written plainly with ordinary autograd and no gatfast op: the oracle of
GATStep's tests (the simultaneous update) and the baseline of its benchmarks (the paper's
alternating algorithm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gatfast.gat.update import trainable_parameters
from gatfast.ops.ball import random_start
from gatfast.ops.reference import perturb


def gat_gradients_simultaneous(classifier, generator, x, y, eps, perturb_norm, alpha, c_g, generator_steps=1,
                               random_init=False):
    """The gradients of L_C for the classifier and L_G for the generator, both at the
    current parameters, with ordinary autograd and no gatfast op: what GATStep computes.
    perturb_norm: "linf", "l2", or None for the penalty bound (box clamp only).
    generator_steps > 1: G is applied again at each x_t with a fresh input gradient there.
    random_init: G's first step starts from a random point of the ball (with the clean gradient)."""
    params_c, params_g = trainable_parameters(classifier), trainable_parameters(generator)
    x0 = x.detach()
    x_in = x0.clone().requires_grad_(True)
    ce_clean = F.cross_entropy(classifier(x_in), y)
    (g,) = torch.autograd.grad(ce_clean, [x_in], retain_graph=True)
    x_t = random_start(x0, eps, perturb_norm or "linf") if random_init else x0
    for t in range(generator_steps):
        if t > 0:
            x_leaf = x_t.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(classifier(x_leaf), y), [x_leaf])
        # A generator that says reads_gradient = False is called on the image alone.
        delta = generator(x_t, g.detach()) if getattr(generator, "reads_gradient", True) else generator(x_t)
        total = delta + (x_t - x0)
        x_t, sq = perturb(x0, total, eps, perturb_norm, with_sq=True)
    ce_adv = F.cross_entropy(classifier(x_t), y)
    loss_c = alpha * ce_clean + (1 - alpha) * ce_adv
    loss_g = -ce_adv + c_g * sq.mean()
    grads_c = torch.autograd.grad(loss_c, params_c, retain_graph=True, allow_unused=True)
    grads_g = torch.autograd.grad(loss_g, params_g, allow_unused=True)
    return list(grads_c), list(grads_g)


def gat_step_literal(classifier, generator, opt_classifier, opt_generator, x, y, eps, perturb_norm, alpha, c_g):
    """The paper's alternating algorithm: update the generator against the current
    classifier, then the classifier against the updated generator's examples (about
    four classifier forwards and three backwards). The baseline for tests and benchmarks."""
    x0 = x.detach()
    x_in = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(classifier(x_in), y), [x_in])
    g = g.detach()
    # Generator update.
    x_adv, sq = perturb(x0, generator(x0, g), eps, perturb_norm, with_sq=True)
    loss_g = -F.cross_entropy(classifier(x_adv), y) + c_g * sq.mean()
    opt_generator.zero_grad(set_to_none=True)
    loss_g.backward(inputs=trainable_parameters(generator))
    opt_generator.step()
    # Classifier update, on the updated generator's perturbation.
    with torch.no_grad():
        x_adv, _ = perturb(x0, generator(x0, g), eps, perturb_norm)
    loss_c = alpha * F.cross_entropy(classifier(x0), y) + (1 - alpha) * F.cross_entropy(classifier(x_adv), y)
    opt_classifier.zero_grad(set_to_none=True)
    loss_c.backward(inputs=trainable_parameters(classifier))
    opt_classifier.step()
    return {"loss_classifier": loss_c.detach(), "loss_generator": loss_g.detach()}
