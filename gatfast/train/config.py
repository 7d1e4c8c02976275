"""A training run's configuration: TrainConfig (every option of the engine, the methods and
the GAT step; checked before anything runs or is written), the named GAT recipes, and
ConfigError, the one error a bad configuration raises (the CLI prints it as one line and
exits with 2)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch

from gatfast.gat import generators
from gatfast.ops import backends
from gatfast.ops import checks
from gatfast.train import data, methods, models


# Named GAT recipes. "paper": the Generative Adversarial Trainer as Lee, Han and Lee
# (2017) describe it: the generator sees the input gradient only and makes one step per
# batch from the clean point, one generator update per classifier update, a full-size
# generator. "l2l": after learned multi-step attackers (L2L / L2L-DA), the image beside the
# gradient, two generator steps each on a fresh gradient, the first from a random point of
# the ball, a half-resolution generator body with a per-pixel path. "l2l-3" (the default):
# the same with three generator steps and a quarter of the classifier's loss on clean
# images: on mnist5k (seed 0, APGD-CE and APGD-T on 500 images, 2026-12-01) 72.6% worst
# case against l2l's 62.8% and PGD-3 AT's 67.4% at 1.18x PGD-3's FLOPs; alpha 0.5 gave
# 68.8% with three steps, alpha 0 72.4% (results/gat-screening-mnist5k/). A latent code and a second
# generator update were measured and left out (figures: README). Its generator learns at 3e-3
# (Adam), the others' at 1e-3: at 1e-3 the generator of one seed in three lost the game and
# its classifier the robustness (digits 82.0 +- 4.9% worst case over three seeds, 85.0 +- 1.0%
# at 3e-3; mnist5k 70.1 +- 4.0% -> 73.5 +- 3.0%, APGD-CE and APGD-T; 1e-2 helped on digits
# only; results/gat-screening-*/, 2026-12-07), at no cost.
_L2L = {"generator_input": "image+grad", "generator_updates": 1, "latent_dim": 0, "generator_random_init": 1,
        "generator_resolution": "half"}
RECIPES = {
    "paper": {"generator_input": "grad", "generator_steps": 1, "generator_updates": 1, "latent_dim": 0,
              "generator_random_init": 0, "generator_resolution": "full", "alpha": 0.5, "generator_lr": 1e-3},
    "l2l": {**_L2L, "generator_steps": 2, "alpha": 0.5, "generator_lr": 1e-3},
    "l2l-3": {**_L2L, "generator_steps": 3, "alpha": 0.25, "generator_lr": 3e-3},
}
DEFAULT_RECIPE = "l2l-3"   # TrainConfig's gat defaults (a test holds the two together)


CERTIFIED = ("crown_ibp", "ibp")  # the methods that train on certified bounds
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
AMP = ("bf16", "fp16")


class ConfigError(ValueError):
    """A configuration that cannot run: the CLI prints it as one line and exits with 2."""


@dataclass
class TrainConfig:
    dataset: str = "mnist5k"
    method: str = "gat"
    model: str = "small_cnn"
    eps: float = 0.3
    norm: str = "linf"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"          # OPTIMIZERS: adam | sgd (momentum 0.9, nesterov)
    weight_decay: float = 0.0
    schedule: str = "constant"       # constant | cosine (per step, to 0 at the end)
    eps_warmup: float | None = None  # epochs over which eps ramps linearly from 0 (all methods; None: warmup())
    seed: int = 0
    amp: str | None = None
    cuda_graph: bool = False         # gat on a GPU: capture the whole step (no non-finite guard then)
    single_pass: bool = False        # gat, image-only generator: one forward over cat(x, x_adv) (GATStep)
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    backend: str = "auto"            # gatfast op backend
    data_root: str | None = None
    download: bool = False
    train_size: int = 0              # train on the first N images of the training split (0: all)
    # pgd_at / trades / fgsm_rs
    attack_steps: int = 10
    attack_step_size: float | None = None
    trades_beta: float = 6.0
    # crown_ibp / ibp (kappa: the clean loss's weight; beta: CROWN-IBP's share of the bound;
    # both start at the method's value and reach these ends with the eps ramp)
    kappa_end: float | None = None   # None: 0 for crown_ibp, 0.5 for ibp (the papers')
    beta_end: float = 0.0            # crown_ibp: 0 ends on IBP bounds alone (Zhang et al.'s 1 -> 0)
    # gaussian
    sigma: float = 0.25              # the noise's standard deviation (the smoothing sigma)
    # gat
    alpha: float = 0.25              # the clean loss's share (DEFAULT_RECIPE's)
    c_g: float = 0.0
    generator_input: str = "image+grad"
    generator_bound: str | None = None   # default: the norm
    generator_steps: int = 3
    generator_updates: int = 1
    latent_dim: int = 0
    generator_random_init: int = 1   # 1: the generator's first step starts at a random point of the ball
    generator_width: int = 32
    generator_blocks: int = 1
    generator_resolution: str = "half"   # full | half (body at half size + a per-pixel path)
    generator_lr: float = 3e-3
    recipe: str | None = None        # the named GAT recipe these options came from (RECIPES)
    # the engine
    max_nonfinite: int = 5           # consecutive skipped steps before training stops
    eval_pgd_steps: int = 40         # final white-box check on the test split (0: none)
    progress: bool = True

    @classmethod
    def from_recipe(cls, name: str, **overrides) -> "TrainConfig":
        """A gat config from a named recipe (RECIPES); explicit overrides win."""
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
        return cls(**{"method": "gat", **RECIPES[name], **overrides, "recipe": name})

    def warmup(self) -> float:
        """The eps ramp's length in epochs: eps_warmup as given, else half the epochs for the
        certified methods (bound-based training from the full eps at once fails to train,
        Gowal et al. 2018) and none for the others."""
        if self.eps_warmup is not None:
            return self.eps_warmup
        return self.epochs / 2 if self.method in CERTIFIED else 0.0

    def eps_at(self, progress: float) -> float:
        """The attack budget at `progress` epochs into training (a float): the ramp, then eps."""
        warmup = self.warmup()
        if warmup <= 0 or progress >= warmup:
            return self.eps
        return self.eps * max(progress / warmup, 1e-3)

    def lr_factor(self, progress: float) -> float:
        """The learning-rate schedule's factor at `progress` epochs into training."""
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress / self.epochs, 1.0)))
        return 1.0

    def validate(self) -> "TrainConfig":
        """Every option checked before anything runs or is written, with the same rules
        (gatfast.ops.checks) the ops, the step and the attacks apply; a broken one raises
        ConfigError naming the flag."""
        def need(ok, message):
            if not ok:
                raise ConfigError(message)

        def rule(check, *args, message):
            checks.raising(ConfigError, check, *args, message=message)

        def choice(name, value, options):
            need(value in options, f"unknown {name} {value!r}; choose from {', '.join(options)}")

        choice("dataset", self.dataset, data.DATASETS)
        choice("method", self.method, methods.METHODS)
        choice("model", self.model, models.MODELS)
        rule(lambda v: checks.norm(v, allow_none=False), self.norm, message=f"norm must be linf or l2, got {self.norm!r}")
        rule(checks.positive, self.eps, "eps", message=f"eps must be > 0, got {self.eps}")
        need(self.norm != "linf" or self.eps <= 1,
             f"eps {self.eps} is beyond the [0, 1] pixel range for linf (did you mean {self.eps}/255?)")
        for name in ("epochs", "batch_size", "attack_steps", "generator_steps", "generator_updates",
                     "generator_width", "max_nonfinite"):
            rule(checks.count, getattr(self, name), name,
                 message=f"{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("eval_pgd_steps", "train_size", "latent_dim", "seed"):
            rule(checks.count, getattr(self, name), name, 0,
                 message=f"{name.replace('_', '-')} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "generator_lr"):
            rule(checks.positive, getattr(self, name), name, message=f"{name} must be > 0")
        rule(checks.count, self.generator_blocks, "generator_blocks", 0,
             message=f"generator-blocks must be an integer >= 0, got {self.generator_blocks!r}")
        need(self.generator_random_init in (0, 1),
             f"generator-random-init must be 0 or 1, got {self.generator_random_init!r}")
        if self.attack_step_size is not None:
            rule(checks.positive, self.attack_step_size, "attack_step_size",
                 message=f"attack-step-size must be > 0, got {self.attack_step_size}")
        for name in ("weight_decay", "trades_beta"):
            value = getattr(self, name)
            rule(checks.finite, value, name, message=f"{name.replace('_', '-')} must be >= 0, got {value!r}")
            need(value >= 0, f"{name.replace('_', '-')} must be >= 0, got {value!r}")
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("schedule", self.schedule, SCHEDULES)
        rule(checks.amp, self.amp, message=f"amp must be bf16 or fp16, got {self.amp!r}")
        rule(checks.alpha, self.alpha, message=f"alpha must be in [0, 1], got {self.alpha}")
        rule(checks.finite, self.c_g, "c_g", message=f"c-g must be >= 0, got {self.c_g}")
        need(self.c_g >= 0, f"c-g must be >= 0, got {self.c_g}")
        if self.eps_warmup is not None:
            rule(checks.finite, self.eps_warmup, "eps_warmup", message=f"eps-warmup must be >= 0, got {self.eps_warmup}")
            need(self.eps_warmup >= 0, f"eps-warmup must be >= 0, got {self.eps_warmup}")
        for name in ("kappa_end", "beta_end"):
            if getattr(self, name) is not None:
                rule(checks.fraction, getattr(self, name), name,
                     message=f"{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)!r}")
        need(self.beta_end == 0 or self.method == "crown_ibp", "beta-end is an option of the crown_ibp method")
        rule(checks.positive, self.sigma, "sigma", message=f"sigma must be > 0, got {self.sigma!r}")
        need(self.method not in CERTIFIED or self.model in models.CERTIFIABLE,
             f"{self.method} trains on bounds of the network as it trains, which gatfast.certify computes for "
             f"{', '.join(models.CERTIFIABLE)} (the ResNets' BatchNorm has no fixed function in training mode), "
             f"got model {self.model!r}")
        choice("generator-input", self.generator_input, generators.INPUTS)
        bound = self.generator_bound or self.norm
        choice("generator-bound", bound, generators.BOUNDS)
        need(bound in (self.norm, "penalty"),
             f"the generator cannot bound a {self.norm} perturbation with a {bound} bound "
             f"(use generator-bound {self.norm} or penalty)")
        choice("generator-resolution", self.generator_resolution, generators.RESOLUTIONS)
        need(self.recipe is None or self.recipe in RECIPES,
             f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        need(not self.cuda_graph or self.method == "gat", "cuda-graph is an option of the gat method")
        need(not self.single_pass or self.method == "gat", "single-pass is an option of the gat method")
        need(not self.single_pass or self.generator_input == "image",
             f"single-pass needs generator-input image (x_adv must exist before the classifier runs), "
             f"got {self.generator_input!r}")
        need(not self.single_pass or self.alpha < 1, "single-pass needs alpha < 1")
        choice("backend", self.backend, backends.BACKENDS)
        check_device_name(self.device)
        need(self.data_root is None or self.download or os.path.isdir(self.data_root),
             f"data-root {self.data_root!r} is not a folder (--download creates it)")
        return self


def check_device_name(name) -> str:
    """auto, cpu, cuda or cuda:N; anything else is a ConfigError naming --device."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value, where this machine has it."""
    if check_device_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return device

