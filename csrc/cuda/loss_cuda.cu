// CUDA kernel of the fused clean + adversarial cross-entropy: one warp per row
// computes max/argmax, log-sum-exp and both logit gradients; a row sum follows.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>

#include "../common.h"
#include "reduce.cuh"

namespace gatfast {
namespace cuda {

namespace {

constexpr int kWarpsPerBlock = 4;

// Cross-entropy of one row, computed by one warp; every lane gets the result.
template <typename scalar_t, typename acc_t>
__device__ acc_t warp_row_ce(const scalar_t* z, int64_t C, int64_t t, acc_t w, scalar_t* grad, bool* correct) {
  const int lane = threadIdx.x & 31;
  acc_t m = -INFINITY;
  int64_t arg = C;
  for (int64_t j = lane; j < C; j += 32) {
    acc_t v = z[j];
    if (v > m || arg == C) { m = v; arg = j; }
  }
  for (int o = 16; o > 0; o >>= 1) {  // max with the first index on ties, as argmax
    acc_t om = __shfl_xor_sync(0xffffffffu, m, o);
    int64_t oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (om > m || (om == m && oa < arg)) { m = om; arg = oa; }
  }
  acc_t sum = 0;
  for (int64_t j = lane; j < C; j += 32) sum += exp(acc_t(z[j]) - m);
  sum = warp_sum(sum);
  *correct = arg == t;
  if (grad != nullptr) {
    const acc_t inv = acc_t(1) / sum;
    for (int64_t j = lane; j < C; j += 32) {
      grad[j] = w * (exp(acc_t(z[j]) - m) * inv - (j == t ? acc_t(1) : acc_t(0)));
    }
  }
  return m + log(sum) - acc_t(z[t]);
}

template <typename scalar_t, typename acc_t>
__global__ void clean_adv_loss_kernel(const scalar_t* __restrict__ clean, const scalar_t* __restrict__ adv,
                                      const int64_t* __restrict__ target, scalar_t* __restrict__ grad_clean,
                                      scalar_t* __restrict__ grad_adv, acc_t* __restrict__ row_loss,
                                      int64_t* __restrict__ hits, int64_t N, int64_t C, acc_t alpha) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (i >= N) return;
  const int64_t t = target[i];
  CUDA_KERNEL_ASSERT(t >= 0 && t < C && "gatfast: target is outside [0, C)");
  const acc_t wc = alpha / N, wa = (1 - alpha) / N;
  bool ok_c, ok_a;
  acc_t ce_c = warp_row_ce<scalar_t, acc_t>(clean + i * C, C, t, wc, grad_clean ? grad_clean + i * C : nullptr, &ok_c);
  acc_t ce_a = warp_row_ce<scalar_t, acc_t>(adv + i * C, C, t, wa, grad_adv ? grad_adv + i * C : nullptr, &ok_a);
  if ((threadIdx.x & 31) == 0) {
    row_loss[i] = alpha * ce_c + (1 - alpha) * ce_a;
    hits[i] = ok_c;
    hits[N + i] = ok_a;
  }
}

}  // namespace

LossFwdOut clean_adv_loss_fwd(const at::Tensor& logits_clean, const at::Tensor& logits_adv,
                              const at::Tensor& target, double alpha, bool compute_grad) {
  c10::cuda::CUDAGuard guard(logits_clean.device());
  const int64_t N = logits_clean.size(0), C = logits_clean.size(1);
  LossBuffers out(logits_clean, logits_adv, compute_grad);
  auto &row_loss = out.row_loss, &hits = out.hits, &grad_clean = out.grad_clean, &grad_adv = out.grad_adv;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int blocks = static_cast<int>((N + kWarpsPerBlock - 1) / kWarpsPerBlock);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits_clean.scalar_type(), "gatfast_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    clean_adv_loss_kernel<scalar_t, acc_t><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
        logits_clean.const_data_ptr<scalar_t>(), logits_adv.const_data_ptr<scalar_t>(),
        target.const_data_ptr<int64_t>(), compute_grad ? grad_clean.mutable_data_ptr<scalar_t>() : nullptr,
        compute_grad ? grad_adv.mutable_data_ptr<scalar_t>() : nullptr, row_loss.mutable_data_ptr<acc_t>(),
        hits.mutable_data_ptr<int64_t>(), N, C, alpha);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  auto loss = row_loss.sum() / N;
  return {loss, grad_clean, grad_adv, hits.select(0, 0).sum(), hits.select(0, 1).sum()};
}

}  // namespace cuda
}  // namespace gatfast
