"""Loads the CMake-built library with torch.ops.load_library and runs one op."""

import sys

import torch

torch.ops.load_library(sys.argv[1])
x0 = torch.zeros(2, 3)
out = torch.ops.gatfast.pgd_step(x0, torch.ones(2, 3), x0, 0.1, 0.05, 1, 0.0, 1.0)
assert torch.allclose(out, torch.full((2, 3), 0.05)), out
print("cmake library ok:", sys.argv[1], "cuda kernels:", torch.ops.gatfast.cuda_built())
