"""Triton kernels of gatfast, the subpackage gatfast.ops.kernels.

Each op runs one program per sample row (a loop over the row in blocks), with math
in float32 whatever the storage dtype. `gatfast.ops.kernels.ops` wraps them as
torch.library triton ops (gatfast::triton_*). On the CPU they run under the Triton
interpreter (TRITON_INTERPRET=1, set before triton is imported)."""
