"""gatfast: fast, honest GAN-based adversarial training for PyTorch.

The layers, each importing only those before it (README, "Architecture"):
  gatfast.ops       the fused ops (project, perturb, perturb_with_norm, pgd_step,
                    clean_adv_loss) on four backends (torch, cpp, cuda, triton)
  gatfast.gat       GATStep, PerturbationGenerator, the one update path
  gatfast.attacks   the attack suite (on ops only)
  gatfast.train     configuration, the engine, methods, models, data, run folders
  gatfast.evaluation  the suite's worst case and sanity checks, sweeps, reports
  gatfast.bench     benchmarks;  gatfast.cli  the command line

What a user needs is importable from here. The training and evaluation layers load on
first use (gatfast.load_run, gatfast.train, ...), so `import gatfast` stays light.
"""

import importlib

from gatfast._version import __version__
from gatfast.gat import GATStep, PerturbationGenerator
from gatfast.ops import clean_adv_loss, perturb, perturb_with_norm, pgd_step, project
from gatfast.ops.backends import available_backends, build_info, get_backend, set_backend, use_backend

# name -> (module, attribute or None for the module itself), imported on first use.
_LAZY = {
    "attacks": ("gatfast.attacks", None),
    "train": ("gatfast.train", None),
    "evaluation": ("gatfast.evaluation", None),
    "bench": ("gatfast.bench", None),
    "load_run": ("gatfast.train.runs", "load_run"),
    "TrainConfig": ("gatfast.train.config", "TrainConfig"),
    "evaluate": ("gatfast.evaluation.suite", "evaluate"),
    "EvalConfig": ("gatfast.evaluation.suite", "EvalConfig"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = importlib.import_module(module)
        return value if attribute is None else getattr(value, attribute)
    raise AttributeError(f"module 'gatfast' has no attribute {name!r}")


__all__ = [
    "EvalConfig",
    "GATStep",
    "PerturbationGenerator",
    "TrainConfig",
    "__version__",
    "attacks",
    "available_backends",
    "build_info",
    "clean_adv_loss",
    "evaluate",
    "get_backend",
    "load_run",
    "perturb",
    "perturb_with_norm",
    "pgd_step",
    "project",
    "set_backend",
    "use_backend",
]
