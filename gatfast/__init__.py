"""gatfast: fast, honest GAN-based adversarial training for PyTorch.

The kernel layer: fused ops (project, perturb, perturb_with_norm, pgd_step,
clean_adv_loss) on four backends (torch, cpp, cuda, triton)."""

from gatfast.backends import available_backends, build_info, get_backend, set_backend, use_backend
from gatfast.ops import clean_adv_loss, perturb, perturb_with_norm, pgd_step, project

__version__ = "0.1.0"


def __getattr__(name):
    # gatfast.load_run without importing the training engine (and torchvision) at
    # `import gatfast`: the kernel layer stays light to import.
    if name == "load_run":
        from gatfast.train import load_run
        return load_run
    raise AttributeError(f"module 'gatfast' has no attribute {name!r}")


__all__ = [
    "available_backends",
    "build_info",
    "clean_adv_loss",
    "get_backend",
    "load_run",
    "perturb",
    "perturb_with_norm",
    "pgd_step",
    "project",
    "set_backend",
    "use_backend",
]
