"""Which implementation runs each op: auto | torch | cpp | cuda | triton.

The choice is process-wide: the GATFAST_BACKEND environment variable sets it at
import, `use_backend(name)` changes it for a block, `set_backend(name)` for good.
`auto` takes, for CPU tensors, the C++ CPU kernels (else plain torch) and, for CUDA
tensors, the first GPU backend built and loaded here that a GPU run has shown to pass
every gpu test (GPU_PROVEN, with where its results are); were none shown, Triton (whose
exact source the CPU tests run under the interpreter) if its kernels loaded, else plain
torch. `build_info()` says which and why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "cpp", "cuda", "triton")

_BUILD_HINT = (
    "rebuild gatfast with `pip install --no-build-isolation -e .` (see README, 'Build'); "
    "the CUDA kernels need the CUDA toolkit (CUDA_HOME) and a CUDA build of torch, or GATFAST_CUDA=1 to insist"
)


# GPU backends a GPU run has shown to pass every gpu-marked test, best first, with the
# evidence. cuda comes first: at the training shapes (256x3x32x32, 1024x1x28x28) it beat
# triton on every op, whose per-call cost on the host is larger; triton was faster only on
# the 100 MB perturb forward.
GPU_PROVEN = (
    ("cuda", "every gpu test passed on an NVIDIA H200, torch 2.11.0, 2026-11-27, and it was the faster GPU "
             "backend at the training shapes (benchmarks/results/gpu-check-NVIDIA_H200.md)"),
    ("triton", "every gpu test passed on an NVIDIA H200, torch 2.11.0, triton 3.6.0, 2026-11-27 "
               "(benchmarks/results/gpu-check-NVIDIA_H200.md)"),
)


def _check_name(name) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_current = _check_name(os.environ.get("GATFAST_BACKEND", "auto").strip() or "auto")


def _load_extension() -> str | None:
    """Load gatfast._C (which registers the gatfast::* C++ ops); None, or why it failed."""
    try:
        from gatfast import _C  # noqa: F401
    except ImportError as e:
        return str(e)
    from gatfast.ops import _cpp_ops  # noqa: F401  (fake impls and autograd of those ops)

    return None


# Settled once at import, as plain values, so torch.compile traces `resolve` without graph breaks.
_EXTENSION_ERROR = _load_extension()
_CPP_BUILT = _EXTENSION_ERROR is None
_CUDA_BUILT = _CPP_BUILT and bool(torch.ops.gatfast.cuda_built())
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _load_triton() -> str | None:
    """Import gatfast's Triton kernels where triton can run (CUDA, or the interpreter on
    the CPU); None, or why they are not loaded. A broken triton install must not break
    gatfast: it only takes triton out of what `auto` and available_backends() offer."""
    if not _TRITON_INSTALLED:
        return "the triton package is not installed"
    if not (torch.cuda.is_available() or triton_interpreted()):
        return "no CUDA device, and TRITON_INTERPRET is not 1"
    try:
        from gatfast.ops import _triton_ops  # noqa: F401
    except Exception as e:
        return f"gatfast.ops.kernels failed to load: {type(e).__name__}: {e}"
    return None


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


_TRITON_ERROR = _load_triton()
_TRITON_LOADED = _TRITON_ERROR is None


def _auto_for_cuda() -> tuple[str, str]:
    """The backend `auto` runs on CUDA tensors, and why: only one that loaded."""
    loaded = {"cuda": _CUDA_BUILT, "triton": _TRITON_LOADED}
    for name, evidence in GPU_PROVEN:
        if loaded[name]:
            return name, evidence
    if _TRITON_LOADED:
        return "triton", "no proven GPU backend is built here; triton's source runs in every CPU test"
    return "torch", f"the CUDA kernels are not built and triton is not loaded ({_TRITON_ERROR})"


_AUTO_CUDA, _AUTO_CUDA_WHY = _auto_for_cuda()


def extension_error() -> str | None:
    """Why gatfast._C could not be loaded, or None when it is."""
    return _EXTENSION_ERROR


def cpp_built() -> bool:
    return _CPP_BUILT


def cuda_built() -> bool:
    return _CUDA_BUILT


def triton_installed() -> bool:
    return _TRITON_INSTALLED


def triton_error() -> str | None:
    """Why gatfast's Triton kernels are not loaded here, or None when they are."""
    return _TRITON_ERROR


def available_backends() -> list[str]:
    """The backends that can run on this machine with this install."""
    names = ["torch"]
    if cpp_built():
        names.append("cpp")
    if cuda_built() and torch.cuda.is_available():
        names.append("cuda")
    if _TRITON_LOADED:
        names.append("triton")
    return names


def build_info() -> dict:
    """What this install holds and what this machine can run; for bug reports."""
    return {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension": "built" if cpp_built() else f"missing ({extension_error()})",
        "cpu_kernels_isa": str(torch.ops.gatfast.cpu_isa()) if cpp_built() else None,
        "cuda_kernels": cuda_built(),
        "cuda_available": torch.cuda.is_available(),
        "triton_installed": triton_installed(),
        "triton_interpreted": triton_interpreted(),
        "triton_kernels": "loaded" if _TRITON_LOADED else f"not loaded ({_TRITON_ERROR})",
        "available_backends": available_backends(),
        "backend": _current,
        "auto_on_cuda": _AUTO_CUDA,
        "auto_on_cuda_why": _AUTO_CUDA_WHY,
    }


def get_backend() -> str:
    return _current


def set_backend(name: str) -> None:
    global _current
    _current = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Run the ops of the enclosed block on backend `name`."""
    global _current
    previous, _current = _current, _check_name(name)
    try:
        yield
    finally:
        _current = previous


def resolve(device: torch.device) -> str:
    """The backend that runs an op on tensors of `device`, with a clear error when
    the chosen one cannot."""
    name, kind = _current, device.type
    if name == "auto":
        if kind == "cuda":
            return _AUTO_CUDA
        return "cpp" if kind == "cpu" and _CPP_BUILT else "torch"
    if name == "torch":
        return name
    if name == "cpp":
        if not cpp_built():
            raise RuntimeError(f"backend 'cpp' is not built here ({extension_error()}): {_BUILD_HINT}")
        if kind != "cpu":
            raise RuntimeError(f"backend 'cpp' runs on CPU tensors; got {device}: use 'cuda', 'triton' or 'auto'")
        return name
    if name == "cuda":
        if not cuda_built():
            raise RuntimeError(f"backend 'cuda' is not built in this install: {_BUILD_HINT}")
        if kind != "cuda":
            raise RuntimeError(f"backend 'cuda' runs on CUDA tensors; got {device}: use 'cpp', 'torch' or 'auto'")
        return name
    # triton
    if not triton_installed():
        raise RuntimeError("backend 'triton' needs the triton package: pip install triton")
    if kind == "cpu" and not triton_interpreted():
        raise RuntimeError(
            "backend 'triton' runs on CUDA tensors, or on CPU tensors only under the Triton "
            "interpreter (set TRITON_INTERPRET=1 before triton is imported)"
        )
    if kind not in ("cpu", "cuda"):
        raise RuntimeError(f"backend 'triton' runs on CUDA tensors; got {device}")
    if not _TRITON_LOADED:
        raise RuntimeError(f"backend 'triton' cannot run: {_TRITON_ERROR}")
    return name
