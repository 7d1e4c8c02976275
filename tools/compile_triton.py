"""Compile every Triton kernel of gatfast for a GPU architecture, on a machine without a
GPU: Triton's compiler (to PTX, then ptxas to a cubin) needs no device.

    python tools/compile_triton.py [--arch 90]

The CPU tests run the kernels under the Triton interpreter, which accepts code the GPU
compiler refuses (a kernel reading a plain module global, for one: the first GPU run
found that). This compiles each kernel for every value of its compile-time switches, in
float32, and in float16 and bfloat16 for the switches that touch the most code, so such
code fails here. Run it without TRITON_INTERPRET (with it, triton.jit gives interpreted
functions, which have nothing to compile).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time


def _kernels():
    from gatfast.ops.kernels.loss import clean_adv_loss_kernel
    from gatfast.ops.kernels.perturb import perturb_bwd_kernel, perturb_fwd_kernel
    from gatfast.ops.kernels.pgd import pgd_step_kernel

    # (kernel, argument types with T for the storage dtype, switches and their values)
    return [
        (perturb_fwd_kernel,
         dict(delta_ptr="*T", x_ptr="*T", out_ptr="*T", sq_ptr="*fp32", scale_ptr="*fp32", D="i32", eps="fp32",
              lo="fp32", hi="fp32"),
         dict(NORM=(0, 1, 2), HAS_X=(False, True), WITH_SQ=(False, True))),
        (perturb_bwd_kernel,
         dict(g_ptr="*T", gsq_ptr="*fp32", delta_ptr="*T", x_ptr="*T", scale_ptr="*fp32", gd_ptr="*T", gx_ptr="*T",
              D="i32", eps="fp32", lo="fp32", hi="fp32", gs="fp32"),
         dict(NORM=(0, 1, 2), HAS_X=(False, True), HAS_GSQ=(False, True), NEED_GX=(False, True))),
        (pgd_step_kernel,
         dict(xa_ptr="*T", g_ptr="*T", x0_ptr="*T", out_ptr="*T", D="i32", step_size="fp32", eps="fp32",
              lo="fp32", hi="fp32"),
         dict(NORM=(1, 2))),
        (clean_adv_loss_kernel,
         dict(clean_ptr="*T", adv_ptr="*T", target_ptr="*i64", gc_ptr="*T", ga_ptr="*T", row_loss_ptr="*fp32",
              hits_ptr="*i64", N="i32", C="i32", alpha="fp32"),
         dict(COMPUTE_GRAD=(False, True))),
    ]


def _cases():
    """(kernel, dtype, switches): every switch combination in fp32; fp16 and bf16 with
    every switch at its last (fullest) value."""
    for kernel, args, switches in _kernels():
        names = list(switches)
        for values in itertools.product(*switches.values()):
            yield kernel, args, "fp32", dict(zip(names, values))
        fullest = {name: vals[-1] for name, vals in switches.items()}
        for dtype in ("fp16", "bf16"):
            yield kernel, args, dtype, fullest


def compile_all(arch: int, block: int = 1024, log=print) -> int:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    failures = 0
    count = 0
    start = time.perf_counter()
    for kernel, args, dtype, switches in _cases():
        constexprs = {**switches, "BLOCK": block}
        signature = {name: kind.replace("T", dtype) if kind.startswith("*T") else kind for name, kind in args.items()}
        signature.update({name: "constexpr" for name in constexprs})
        label = f"{kernel.fn.__name__} {dtype} {switches}"
        count += 1
        try:
            triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=target)
        except Exception as e:  # every failing case is named, then the run fails
            failures += 1
            log(f"FAILED {label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}")
    log(f"compiled {count - failures}/{count} kernel variants for sm_{arch} in {time.perf_counter() - start:.0f} s")
    return failures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability as one number (default 90: H100/H200)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        p.error("TRITON_INTERPRET=1 is set: the kernels would be interpreted functions, with nothing to compile")
    return 1 if compile_all(args.arch) else 0


if __name__ == "__main__":
    sys.exit(main())
