"""Build of gatfast: the Python package (its Triton kernels in gatfast.ops.kernels) and
the C++ extension gatfast._C (CPU kernels always, CUDA kernels when possible).

Switches (environment):
  GATFAST_CUDA=0      skip the CUDA kernels
  GATFAST_CUDA=1      require them (a clear error when the toolkit or a CUDA torch is missing)
  (unset)             build them when the CUDA toolkit is found and torch is a CUDA build
  TORCH_CUDA_ARCH_LIST  defaults to "8.0;9.0+PTX" when no GPU is visible
"""

import glob
import os
import sys

from setuptools import find_packages, setup

# torch's CUDA_HOME guess misses the toolkit on machines where nvcc is not on PATH.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402  (after CUDA_HOME is settled)
from torch.utils import cpp_extension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def want_cuda() -> bool:
    switch = os.environ.get("GATFAST_CUDA", "").strip()
    have_toolkit = cpp_extension.CUDA_HOME is not None
    have_torch_cuda = torch.version.cuda is not None
    if switch == "0":
        return False
    if switch == "1":
        if not have_toolkit:
            sys.exit("GATFAST_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to its folder")
        if not have_torch_cuda:
            sys.exit(f"GATFAST_CUDA=1 but torch {torch.__version__} is a CPU-only build: install a CUDA build")
        return True
    if switch not in ("",):
        sys.exit(f"GATFAST_CUDA must be 0, 1 or unset, got {switch!r}")
    return have_toolkit and have_torch_cuda


def extension():
    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    define = [("GATFAST_PYTHON_MODULE", None)]
    # torch picks the C++ standard it needs (C++20 from 2.13). OpenMP: at::parallel_for's
    # threads and the `omp simd` loops of the CPU kernels (torch ships libgomp).
    # -fno-trapping-math lets GCC turn the kernels' masked selects into vector blends
    # (it changes no result, only the promise about floating-point exception flags);
    # -fno-math-errno lets sqrt inline.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
    link = ["-fopenmp"]
    if not want_cuda():
        return cpp_extension.CppExtension(
            "gatfast._C", sources, define_macros=define, extra_compile_args={"cxx": cxx}, extra_link_args=link
        )
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    define.append(("GATFAST_WITH_CUDA", None))
    return cpp_extension.CUDAExtension(
        "gatfast._C",
        sources + rel("csrc/cuda/*.cu"),
        define_macros=define,
        extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
        extra_link_args=link,
    )


setup(
    packages=find_packages(include=["gatfast", "gatfast.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
