// Every header the CPU kernels use, included once before an ISA-specific
// `#pragma GCC target` (cpu_avx2.cpp), so that only gatfast's own kernel code is
// compiled for that ISA and no inline function from these headers is.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "../common.h"
