// The CPU kernels compiled for the baseline ISA of the build (SSE2 on x86-64).
#include "isa_prelude.h"

#define GATFAST_ISA base
#include "row_math.h"
#include "perturb_kernels.h"
#include "loss_kernels.h"
