"""The Triton kernels compile for the GPU machines' architecture (sm_90), here, without a
GPU. The CPU tests run them under the interpreter, which accepted a kernel that the GPU
compiler refused (a plain module global read inside a kernel): this catches that class."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "compile_triton.py"


def _compile(tmp_path, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # compile for real, not from an old cache
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=900)


def test_every_triton_kernel_compiles_for_sm90(tmp_path):
    pytest.importorskip("triton")
    done = _compile(tmp_path, "--arch", "90")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compiled 48/48 kernel variants for sm_90" in done.stdout


def test_the_compile_check_refuses_the_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "TRITON_INTERPRET=1 is set" in done.stderr
