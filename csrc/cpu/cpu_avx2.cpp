// The CPU kernels compiled for AVX2 + FMA (x86-64 with GCC or Clang only); the
// dispatcher (cpu_dispatch.cpp) calls them where the processor has both.
#include "isa_prelude.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#define GATFAST_ISA avx2
#include "row_math.h"
#include "perturb_kernels.h"
#include "loss_kernels.h"
#endif
