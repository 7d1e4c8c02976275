"""Test setup: without a GPU the Triton kernels run under the Triton interpreter on
CPU tensors, which must be switched on before triton is first imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import gatfast  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def cpu_backends():
    return [b for b in ("torch", "cpp", "triton") if b in gatfast.available_backends()]


def float64_backends():
    """The CPU backends that take float64 (torch and cpp), each skipped, not swapped for
    another, where it is not built."""
    return [pytest.param(b, marks=pytest.mark.skipif(b not in gatfast.available_backends(),
                                                     reason=f"the {b} backend is not built here"))
            for b in ("torch", "cpp")]


def gpu_backends():
    return ["torch", "cuda", "triton"] if HAS_CUDA else []


def all_cases():
    """(backend, device) pairs: every CPU backend here, every GPU backend where a GPU is."""
    cases = [pytest.param(b, "cpu", id=f"{b}-cpu") for b in cpu_backends()]
    cases += [pytest.param(b, "cuda", id=f"{b}-cuda", marks=pytest.mark.gpu) for b in gpu_backends()]
    return cases
