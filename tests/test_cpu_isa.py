"""The CPU kernels are compiled twice (baseline and AVX2 + FMA) and picked at run
time: the default copy runs in every other test; here the op tests run again on the
baseline copy, which machines without AVX2 get."""

import os
import subprocess
import sys

import pytest

import gatfast

pytestmark = pytest.mark.skipif("cpp" not in gatfast.available_backends(), reason="C++ extension not built")
HERE = os.path.dirname(os.path.abspath(__file__))


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=os.environ | env, cwd=HERE)


def test_build_info_names_the_kernel_copy():
    assert gatfast.build_info()["cpu_kernels_isa"] in ("avx2", "base")
    r = _python("import gatfast; print(gatfast.build_info()['cpu_kernels_isa'])", GATFAST_CPU_ISA="base")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "base"


def test_baseline_copy_matches_the_reference():
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k", "cpp-cpu",
         os.path.join(HERE, "test_ops.py")],
        capture_output=True, text=True, timeout=900, env=os.environ | {"GATFAST_CPU_ISA": "base"}, cwd=HERE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
