"""Norm names and the integer codes the compiled kernels take (csrc/common.h)."""

_CODES = {None: 0, "linf": 1, "l2": 2}


def code(norm) -> int:
    return _CODES[norm]
