"""Backend selection: the env var, use_backend, auto, and clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gatfast
from gatfast.ops import backends


def _run(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("GATFAST_BACKEND", "TRITON_INTERPRET")} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_use_backend_sets_and_restores():
    before = gatfast.get_backend()
    with gatfast.use_backend("torch"):
        assert gatfast.get_backend() == "torch"
        with gatfast.use_backend("cpp"):
            assert gatfast.get_backend() == "cpp"
        assert gatfast.get_backend() == "torch"
    assert gatfast.get_backend() == before


def test_use_backend_restores_after_an_error():
    before = gatfast.get_backend()
    with pytest.raises(KeyError):
        with gatfast.use_backend("torch"):
            raise KeyError
    assert gatfast.get_backend() == before


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of auto, torch, cpp, cuda, triton; got 'fast'"):
        gatfast.use_backend("fast").__enter__()


def test_env_var_chooses_the_backend():
    r = _run("import gatfast; print(gatfast.get_backend())", GATFAST_BACKEND="torch")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "torch"


def test_bad_env_var_fails_clearly():
    r = _run("import gatfast", GATFAST_BACKEND="nope")
    assert r.returncode != 0
    assert "backend must be one of" in r.stderr and "'nope'" in r.stderr


def test_auto_picks_cpp_for_cpu_tensors():
    if not backends.cpp_built():
        pytest.skip("C++ extension not built")
    with gatfast.use_backend("auto"):
        assert backends.resolve(torch.device("cpu")) == "cpp"


def test_auto_uses_a_cuda_backend_for_cuda_tensors():
    with gatfast.use_backend("auto"):
        expected = "cuda" if backends.cuda_built() else ("triton" if backends.triton_error() is None else "torch")
        assert backends.resolve(torch.device("cuda")) == expected
    info = gatfast.build_info()
    assert info["auto_on_cuda"] == expected and info["auto_on_cuda_why"]


def test_auto_on_cuda_takes_only_a_backend_a_gpu_run_has_proven(monkeypatch):
    """The rule itself, on every combination of what is built: the first proven backend
    that is built, else triton (never proven ones skipped for an unproven cuda), else torch."""
    results = "benchmarks/results/gpu-check-NVIDIA_H200.md"
    assert [name for name, _ in backends.GPU_PROVEN] == ["cuda", "triton"]
    assert all(results in why for _, why in backends.GPU_PROVEN)
    assert (Path(__file__).resolve().parent.parent / results).exists()
    for cuda_built, triton_loaded, expected in [(True, True, "cuda"), (True, False, "cuda"),
                                                (False, True, "triton"), (False, False, "torch")]:
        monkeypatch.setattr(backends, "_CUDA_BUILT", cuda_built)
        monkeypatch.setattr(backends, "_TRITON_LOADED", triton_loaded)
        assert backends._auto_for_cuda()[0] == expected
    monkeypatch.setattr(backends, "GPU_PROVEN", ())
    monkeypatch.setattr(backends, "_CUDA_BUILT", True)
    monkeypatch.setattr(backends, "_TRITON_LOADED", True)
    name, why = backends._auto_for_cuda()
    assert name == "triton" and "no proven GPU backend" in why


def test_available_backends_lists_what_runs_here():
    names = gatfast.available_backends()
    assert names[0] == "torch"
    assert ("cpp" in names) == backends.cpp_built()
    assert ("cuda" in names) == (backends.cuda_built() and torch.cuda.is_available())
    info = gatfast.build_info()
    assert info["available_backends"] == names and info["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error seen without a GPU")
def test_cuda_backend_on_cpu_tensors_is_a_clear_error():
    with gatfast.use_backend("cuda"), pytest.raises(RuntimeError, match="'cuda'"):
        gatfast.project(torch.zeros(2, 3), 0.1, "linf")


def test_cpp_backend_on_cuda_tensors_is_a_clear_error():
    if not backends.cpp_built():
        pytest.skip("C++ extension not built")
    with gatfast.use_backend("cpp"), pytest.raises(RuntimeError, match="'cpp' runs on CPU tensors"):
        backends.resolve(torch.device("cuda"))


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error():
    r = _run(
        "import torch, gatfast\n"
        "with gatfast.use_backend('triton'):\n"
        "    gatfast.project(torch.zeros(2, 3), 0.1, 'linf')\n"
    )
    if torch.cuda.is_available():
        pytest.skip("with a GPU, triton is usable without the interpreter")
    assert r.returncode != 0
    assert "TRITON_INTERPRET=1" in r.stderr


def test_missing_extension_gives_a_build_hint(monkeypatch):
    monkeypatch.setattr(backends, "_CPP_BUILT", False)
    monkeypatch.setattr(backends, "_EXTENSION_ERROR", "No module named 'gatfast._C'")
    with gatfast.use_backend("cpp"), pytest.raises(RuntimeError, match="pip install --no-build-isolation -e ."):
        backends.resolve(torch.device("cpu"))
    with gatfast.use_backend("auto"):
        assert backends.resolve(torch.device("cpu")) == "torch"


BROKEN_KERNELS = """
import sys
sys.modules["gatfast.ops.kernels"] = None  # importing it now raises ImportError, as a broken install would
import torch, gatfast
from gatfast.ops import backends
info = gatfast.build_info()
assert "triton" not in gatfast.available_backends(), info
assert info["triton_kernels"].startswith("not loaded (gatfast.ops.kernels failed to load: ModuleNotFoundError"), info
backends._CUDA_BUILT = False
name, why = backends._auto_for_cuda()
assert name == "torch" and "triton is not loaded" in why, (name, why)
x = torch.rand(2, 3)
gatfast.project(x, 0.1, "linf")  # auto on the CPU is untouched
with gatfast.use_backend("triton"):
    try:
        gatfast.project(x, 0.1, "linf")
    except RuntimeError as e:
        assert "backend 'triton' cannot run: gatfast.ops.kernels failed to load" in str(e), e
    else:
        raise AssertionError("the triton backend ran without its kernels")
print("ok")
"""


def test_auto_never_picks_triton_kernels_that_failed_to_load():
    """triton installed but gatfast's kernels failing to import: auto (on CUDA tensors too)
    must not choose triton, available_backends() must not list it, and choosing it by name
    gives the import error."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", BROKEN_KERNELS], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
