"""Prints the path of the libnvrtc that pip's CUDA torch brings (empty if none), for
CMake, which needs it to load Torch's CMake package when the toolkit lacks it."""

import glob
import os

try:
    import nvidia
except ImportError:
    print("")
else:
    found = [p for d in nvidia.__path__ for p in sorted(glob.glob(os.path.join(d, "*", "lib", "libnvrtc.so*")))]
    found = [p for p in found if "builtins" not in p and ".alt." not in p]
    print(found[0] if found else "")
