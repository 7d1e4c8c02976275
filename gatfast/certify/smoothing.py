"""Randomized smoothing (Cohen, Rosenfeld and Kolter 2019, "Certified adversarial
robustness via randomized smoothing"): the smoothed classifier g(x) = argmax_c P(f(x + n)
= c), n ~ N(0, sigma^2 I), is constant on the L2 ball of radius sigma * Phi^-1(p_A) around
x, where p_A is a lower bound on the top class's probability.

`smoothed_certify` is the paper's CERTIFY: n0 noisy copies choose the top class, n fresh
ones estimate its probability, whose one-sided Clopper-Pearson lower bound at confidence
1 - alpha (scipy's exact binomial interval) gives the radius; below 1/2 it abstains. Each
radius holds with probability at least 1 - alpha over the noise. Noise is drawn in batches
on the model's device, from a seeded generator, so a certificate can be reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gatfast.ops import checks

ABSTAIN = -1


@dataclass
class Smoothed:
    """Per image: the smoothed prediction (ABSTAIN where p_A's bound is not above 1/2), its
    certified L2 radius (0 where it abstains), and whether the prediction is the label."""
    prediction: torch.Tensor
    radius: torch.Tensor
    correct: torch.Tensor
    sigma: float
    n: int
    alpha: float

    def accuracy_at(self, radius: float) -> float:
        """Certified accuracy at an L2 radius: right and certified at least that far."""
        return float((self.correct & (self.radius >= radius)).float().mean())


def _lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound on a binomial proportion (scipy's exact interval)."""
    try:
        from scipy.stats import binomtest
    except ImportError as e:  # pragma: no cover - scipy is a dependency of gatfast's certify extra
        raise ImportError("randomized smoothing needs scipy for the Clopper-Pearson bound: pip install scipy") from e
    if successes == 0:
        return 0.0
    return float(binomtest(successes, trials).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low)


def _counts(model, x1, num_classes, samples, sigma, batch_size, rng):
    """How often each class wins over `samples` noisy copies of one image."""
    counts = torch.zeros(num_classes, dtype=torch.long, device=x1.device)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        noise = torch.randn((b,) + tuple(x1.shape), generator=rng, device=x1.device, dtype=x1.dtype)
        winners = model(x1.unsqueeze(0) + sigma * noise).argmax(1)
        counts += torch.bincount(winners, minlength=num_classes)
        done += b
    return counts


def smoothed_certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, *, n0: int = 100,
                     n: int = 10_000, alpha: float = 0.001, batch_size: int = 1000, seed: int = 0,
                     progress: bool = True) -> Smoothed:
    """CERTIFY of Cohen et al. for every image of x: the smoothed prediction and its
    certified L2 radius sigma * Phi^-1(p_A lower bound), with the labels y to score them."""
    checks.tensor(x, "x")
    y = checks.labels(y, "y", x)
    sigma = checks.positive(sigma, "sigma")
    n0, n = checks.count(n0, "n0"), checks.count(n, "n")
    alpha = checks.fraction(alpha, "alpha", zero=False)
    if alpha >= 0.5:
        raise ValueError(f"alpha must be below 0.5 (a confidence above 1/2), got {alpha}")
    batch_size = checks.count(batch_size, "batch_size")
    seed = checks.seed(seed)
    from tqdm.auto import tqdm
    was_training = model.training
    model.eval()
    rng = torch.Generator(x.device).manual_seed(seed)
    prediction = torch.full((len(y),), ABSTAIN, dtype=torch.long)
    radius = torch.zeros(len(y), dtype=torch.float64)
    try:
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
            for i in tqdm(range(len(y)), desc=f"smoothing, sigma {sigma:g}", disable=not progress, leave=False):
                top = int(_counts(model, x[i], num_classes, n0, sigma, batch_size, rng).argmax())
                wins = int(_counts(model, x[i], num_classes, n, sigma, batch_size, rng)[top])
                p_lower = _lower_confidence_bound(wins, n, alpha)
                if p_lower > 0.5:
                    prediction[i], radius[i] = top, radius_of_probability(p_lower, sigma)
    finally:
        model.train(was_training)
    correct = prediction == y.cpu()
    return Smoothed(prediction, radius, correct, sigma, n, alpha)


def radius_of_probability(p: float, sigma: float) -> float:
    """sigma * Phi^-1(p): the L2 radius a top-class probability p certifies (0 at p <= 1/2)."""
    if p <= 0.5:
        return 0.0
    return sigma * math.sqrt(2) * torch.erfinv(torch.tensor(2 * p - 1, dtype=torch.float64)).item()
