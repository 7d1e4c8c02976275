"""Checks an installed gatfast wheel: imported from the given folder (not the source
tree), it holds the compiled extension and the Triton kernels, and its ops run."""

import os
import sys

import torch

folder = os.path.realpath(sys.argv[1])
import gatfast  # noqa: E402

where = os.path.realpath(gatfast.__file__)
assert where.startswith(folder), f"gatfast was imported from {where}, not from the wheel in {folder}"
assert os.path.exists(os.path.join(folder, "gatfast", "ops", "kernels", "ops.py")), "gatfast.ops.kernels missing from the wheel"
info = gatfast.build_info()
assert info["extension"] == "built", info
x = torch.rand(4, 10)
with gatfast.use_backend("cpp"):
    out = gatfast.perturb(x, torch.randn(4, 10), 0.1, "linf")
assert ((out - x).abs() <= 0.1 + 1e-6).all()
print("wheel ok:", where)
print(info)
