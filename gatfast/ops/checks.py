"""Argument checks for the public ops: every bad input gets a TypeError or
ValueError that names the argument, raised here before any kernel runs.

The checks read only metadata (dtype, shape, device) and Python numbers, so they
cost nothing on the GPU and trace cleanly under torch.compile. The one value check
(labels in range) runs on CPU tensors only, where it needs no device sync."""

from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
NORMS = ("linf", "l2")
_DTYPE_NAMES = "float32, float16, bfloat16 or float64"


def tensor(t, name: str) -> torch.Tensor:
    """A floating-point batch: shape (N, ...) with N >= 1 and at least one element a row."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor ({_DTYPE_NAMES}), got {t.dtype}")
    if t.dim() < 1 or t.shape[0] == 0 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty batch of shape (N, ...), got shape {tuple(t.shape)}")
    return t


def like(t, name: str, ref: torch.Tensor, ref_name: str) -> torch.Tensor:
    """`t` must match `ref` in shape, dtype and device."""
    tensor(t, name)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")
    return t


def labels(t, name: str, images: torch.Tensor, images_name: str = "images") -> torch.Tensor:
    """Class labels of a batch of images: int64 (or int32) of shape (N,), on the images' device."""
    if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32) or t.shape != images.shape[:1]:
        raise ValueError(f"{name} must be int64 class labels of shape ({images.shape[0]},), got "
                         f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if t.device != images.device:
        raise ValueError(f"{name} must be on the device of {images_name} ({images.device}), got {t.device}")
    return t


def positive(value, name: str) -> float:
    """A finite Python number > 0 (eps, step_size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def count(value, name: str, minimum: int = 1) -> int:
    """A Python int >= minimum (steps, sizes, epochs)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def eps(value, norm: str, name: str = "eps") -> float:
    """eps > 0, and on the [0, 1] pixel scale for linf (8 is a 0-255 value: 8/255)."""
    value = positive(value, name)
    if norm == "linf" and value > 1:
        raise ValueError(f"{name}={value} is beyond the [0, 1] pixel range for linf images "
                         f"(did you mean {value:g}/255 = {value / 255:.4f}?)")
    return value


def seed(value, name: str = "seed") -> int:
    """A random seed: a Python int >= 0."""
    return count(value, name, 0)


def fraction(value, name: str, *, zero: bool = True, one: bool = True) -> float:
    """A finite number in [0, 1] (the ends included as asked)."""
    value = finite(value, name)
    if value < 0 or value > 1 or (value == 0 and not zero) or (value == 1 and not one):
        ends = ("[" if zero else "(") + "0, 1" + ("]" if one else ")")
        raise ValueError(f"{name} must be in {ends}, got {value}")
    return value


def nonnegative(value, name: str) -> float:
    value = finite(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def optimizer(value, name: str):
    if not isinstance(value, torch.optim.Optimizer):
        raise TypeError(f"{name} must be a torch.optim.Optimizer, got {type(value).__name__}")
    return value


def finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def box(lo, hi) -> tuple[float, float]:
    lo, hi = finite(lo, "lo"), finite(hi, "hi")
    if not lo < hi:
        raise ValueError(f"lo must be < hi, got lo={lo} and hi={hi}")
    return lo, hi


def norm(value, *, allow_none: bool) -> str | None:
    if value is None and allow_none:
        return None
    if value not in NORMS:
        choices = ", ".join(repr(n) for n in NORMS) + (" or None" if allow_none else "")
        raise ValueError(f"norm must be {choices}, got {value!r}")
    return value


def amp(value) -> str | None:
    """Mixed precision: None (off), "bf16" or "fp16"."""
    if value not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {value!r}")
    return value


def alpha(value) -> float:
    value = finite(value, "alpha")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {value}")
    return value


def logits(t, name: str) -> torch.Tensor:
    tensor(t, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, C), got {tuple(t.shape)}")
    return t


def target(t, logits_clean: torch.Tensor) -> torch.Tensor:
    """Class labels: int64 or int32, shape (N,), on the logits' device, each in [0, C)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"target must hold class indices as int64 (or int32), got {t.dtype}")
    n, c = logits_clean.shape
    if t.shape != (n,):
        raise ValueError(f"target must have shape ({n},) to match the logits, got {tuple(t.shape)}")
    if t.device != logits_clean.device:
        raise ValueError(f"target must be on the logits' device ({logits_clean.device}), got {t.device}")
    # On the GPU a range check would stall the stream; the kernels assert on the device instead.
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        smallest, largest = torch.aminmax(t)  # one pass; the index is looked up only on failure
        if int(smallest) < 0 or int(largest) >= c:
            i = int(((t < 0) | (t >= c)).nonzero()[0, 0])
            raise ValueError(f"target[{i}] = {int(t[i])} is outside the class range [0, {c})")
    return t


def raising(error: type[Exception], check, *args, message: str | None = None):
    """check(*args), its TypeError or ValueError raised again as `error` (a layer's own
    error type, such as the CLI's ConfigError, which it reports as one line), with
    `message` in place of the check's own when given. Returns what the check returns."""
    try:
        return check(*args)
    except (TypeError, ValueError) as e:
        raise error(message or str(e)) from None
