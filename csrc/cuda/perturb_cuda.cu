// CUDA kernels of perturb (forward, backward) and pgd_step. Ops that need a
// per-sample norm run one block per sample row (block reductions); the pure
// elementwise cases (linf or box only, no norm output) run a flat grid.
// Launched on the current stream; no host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../common.h"
#include "reduce.cuh"

namespace gatfast {
namespace cuda {

namespace {

constexpr int kRowThreads = 256;
constexpr int kFlatThreads = 256;

// As torch.clamp: NaN stays NaN (fmin/fmax would turn it into a bound, a valid-looking
// pixel that the non-finite guard never sees).
template <typename acc_t>
__device__ __forceinline__ acc_t clampv(acc_t v, acc_t lo, acc_t hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// As torch.sign: sign(0) = 0 and sign(NaN) = 0, so a NaN gradient takes no step.
template <typename acc_t>
__device__ __forceinline__ acc_t signv(acc_t g) {
  return acc_t(g > 0) - acc_t(g < 0);
}

template <typename acc_t>
__device__ __forceinline__ acc_t project_value(acc_t d, int64_t norm, acc_t s, acc_t eps) {
  if (norm == kLinf) return clampv(d, -eps, eps);
  if (norm == kL2) return d * s;
  return d;
}

int flat_blocks(int64_t n) {
  int64_t b = (n + kFlatThreads - 1) / kFlatThreads;
  return static_cast<int>(std::min<int64_t>(b, 65535 * 32));
}

template <typename scalar_t, typename acc_t>
__global__ void perturb_fwd_flat_kernel(const scalar_t* __restrict__ delta, const scalar_t* __restrict__ x,
                                        scalar_t* __restrict__ out, acc_t* __restrict__ scale, int64_t n,
                                        int64_t N, int64_t norm, acc_t eps, acc_t lo, acc_t hi) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    acc_t p = project_value<acc_t>(delta[k], norm, acc_t(1), eps);
    out[k] = x ? clampv(acc_t(x[k]) + p, lo, hi) : p;
    if (k < N) scale[k] = 1;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void perturb_fwd_rows_kernel(const scalar_t* __restrict__ delta, const scalar_t* __restrict__ x,
                                        scalar_t* __restrict__ out, acc_t* __restrict__ sq,
                                        acc_t* __restrict__ scale, int64_t D, int64_t norm, acc_t eps,
                                        acc_t lo, acc_t hi) {
  __shared__ acc_t buf[32];
  const int64_t base = blockIdx.x * D;
  acc_t s = 1;
  if (norm == kL2) {
    acc_t part = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      acc_t v = delta[base + j];
      part += v * v;
    }
    acc_t n = sqrt(block_sum(part, buf));
    s = n <= eps ? acc_t(1) : eps / n;  // a NaN norm makes the whole row NaN, as the reference
  }
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
  acc_t part = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    acc_t p = project_value<acc_t>(delta[base + j], norm, s, eps);
    if (x == nullptr) {
      out[base + j] = p;
      continue;
    }
    acc_t xv = x[base + j];
    scalar_t o = clampv(xv + p, lo, hi);
    out[base + j] = o;
    acc_t r = acc_t(o) - xv;
    part += r * r;
  }
  if (sq != nullptr) {
    acc_t total = block_sum(part, buf);
    if (threadIdx.x == 0) sq[blockIdx.x] = total;
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t grad_wrt_p(const scalar_t* delta, const scalar_t* x, const scalar_t* g, int64_t k,
                                            int64_t norm, acc_t s, acc_t eps, acc_t lo, acc_t hi, acc_t gs,
                                            acc_t gn2) {
  acc_t p = project_value<acc_t>(delta[k], norm, s, eps);
  if (x == nullptr) return gs * acc_t(g[k]);
  acc_t xv = x[k], v = xv + p;
  if (!(v > lo && v < hi)) return 0;  // torch.clamp passes no gradient at the bounds
  acc_t r = acc_t(scalar_t(clampv(v, lo, hi))) - xv;
  return gs * acc_t(g[k]) + gn2 * r;
}

template <typename scalar_t, typename acc_t>
__global__ void perturb_bwd_rows_kernel(const scalar_t* __restrict__ g, const acc_t* __restrict__ grad_sq,
                                        const scalar_t* __restrict__ delta, const scalar_t* __restrict__ x,
                                        const acc_t* __restrict__ scale, scalar_t* __restrict__ grad_delta,
                                        scalar_t* __restrict__ grad_x, int64_t D, int64_t norm, acc_t eps,
                                        acc_t lo, acc_t hi, acc_t gs) {
  __shared__ acc_t buf[32];
  const int64_t base = blockIdx.x * D;
  const acc_t s = scale[blockIdx.x];
  const acc_t gn2 = grad_sq ? 2 * grad_sq[blockIdx.x] : acc_t(0);
  const bool l2_active = norm == kL2 && s < 1;
  acc_t coef = 0;
  if (l2_active) {
    acc_t part = 0;
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      part += acc_t(delta[base + j]) * grad_wrt_p<scalar_t, acc_t>(delta, x, g, base + j, norm, s, eps, lo, hi, gs, gn2);
    }
    coef = block_sum(part, buf) * s * s * s / (eps * eps);
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    const int64_t k = base + j;
    acc_t dv = delta[k];
    acc_t gp = grad_wrt_p<scalar_t, acc_t>(delta, x, g, k, norm, s, eps, lo, hi, gs, gn2);
    if (norm == kLinf) grad_delta[k] = (dv > -eps && dv < eps) ? gp : acc_t(0);
    else if (l2_active) grad_delta[k] = s * gp - coef * dv;
    else grad_delta[k] = gp;
    if (grad_x != nullptr) {
      acc_t xv = x[k], v = xv + project_value<acc_t>(dv, norm, s, eps);
      bool inside = v > lo && v < hi;
      acc_t r = acc_t(scalar_t(clampv(v, lo, hi))) - xv;
      grad_x[k] = inside ? acc_t(g[k]) : -gn2 * r;
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void pgd_linf_kernel(const scalar_t* xa, const scalar_t* g,
                                const scalar_t* __restrict__ x0, scalar_t* out, int64_t n, acc_t ss, acc_t eps,
                                acc_t lo, acc_t hi) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n; k += stride) {
    acc_t gv = g[k], z = x0[k];
    acc_t dd = clampv(acc_t(xa[k]) + ss * signv(gv) - z, -eps, eps);
    out[k] = clampv(z + dd, lo, hi);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void pgd_l2_rows_kernel(const scalar_t* xa, const scalar_t* g, const scalar_t* __restrict__ x0,
                                   scalar_t* out, int64_t D, acc_t ss, acc_t eps, acc_t lo, acc_t hi) {
  __shared__ acc_t buf[32];
  const int64_t base = blockIdx.x * D;
  acc_t part = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    acc_t v = g[base + j];
    part += v * v;
  }
  const acc_t gn = sqrt(block_sum(part, buf));
  const acc_t step = gn > 0 ? ss / gn : acc_t(0);
  part = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    acc_t v = acc_t(xa[base + j]) + step * acc_t(g[base + j]) - acc_t(x0[base + j]);
    part += v * v;
  }
  const acc_t dn = sqrt(block_sum(part, buf));
  const acc_t f = dn <= eps ? acc_t(1) : eps / dn;  // NaN stays NaN
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    const int64_t k = base + j;
    acc_t z = x0[k];
    acc_t v = acc_t(xa[k]) + step * acc_t(g[k]) - z;
    out[k] = clampv(z + v * f, lo, hi);
  }
}

}  // namespace

PerturbFwdOut perturb_fwd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                          int64_t norm, double lo, double hi, bool with_sq) {
  c10::cuda::CUDAGuard guard(delta.device());
  const int64_t N = delta.size(0), D = row_size(delta);
  auto acc_opts = delta.options().dtype(opmath_dtype(delta.scalar_type()));
  auto out = at::empty_like(delta);
  auto scale = at::empty({N}, acc_opts);
  auto sq = with_sq ? at::empty({N}, acc_opts) : at::empty({0}, acc_opts);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.has_value() ? x->const_data_ptr<scalar_t>() : nullptr;
    if (norm != kL2 && !with_sq) {
      perturb_fwd_flat_kernel<scalar_t, acc_t><<<flat_blocks(N * D), kFlatThreads, 0, stream>>>(
          delta.const_data_ptr<scalar_t>(), xp, out.mutable_data_ptr<scalar_t>(), scale.mutable_data_ptr<acc_t>(),
          N * D, N, norm, eps, lo, hi);
    } else {
      perturb_fwd_rows_kernel<scalar_t, acc_t><<<N, kRowThreads, 0, stream>>>(
          delta.const_data_ptr<scalar_t>(), xp, out.mutable_data_ptr<scalar_t>(),
          with_sq ? sq.mutable_data_ptr<acc_t>() : nullptr, scale.mutable_data_ptr<acc_t>(), D, norm, eps, lo, hi);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, sq, scale};
}

PerturbBwdOut perturb_bwd(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_sq,
                          const at::Tensor& delta, const std::optional<at::Tensor>& x,
                          const at::Tensor& scale, double eps, int64_t norm, double lo, double hi,
                          double grad_scale, bool need_grad_x) {
  c10::cuda::CUDAGuard guard(delta.device());
  const int64_t N = delta.size(0), D = row_size(delta);
  auto grad_delta = at::empty_like(delta);
  auto grad_x = need_grad_x ? at::empty_like(delta) : at::empty({0}, delta.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    perturb_bwd_rows_kernel<scalar_t, acc_t><<<N, kRowThreads, 0, stream>>>(
        grad_out.const_data_ptr<scalar_t>(), grad_sq.has_value() ? grad_sq->const_data_ptr<acc_t>() : nullptr,
        delta.const_data_ptr<scalar_t>(), x.has_value() ? x->const_data_ptr<scalar_t>() : nullptr,
        scale.const_data_ptr<acc_t>(), grad_delta.mutable_data_ptr<scalar_t>(),
        need_grad_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr, D, norm, eps, lo, hi, grad_scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_delta, grad_x};
}

void pgd_step(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
              double eps, int64_t norm, double lo, double hi, at::Tensor& out) {
  c10::cuda::CUDAGuard guard(x_adv.device());
  const int64_t N = x_adv.size(0), D = row_size(x_adv);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "gatfast_pgd_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (norm == kLinf) {
      pgd_linf_kernel<scalar_t, acc_t><<<flat_blocks(N * D), kFlatThreads, 0, stream>>>(
          x_adv.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), x0.const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), N * D, step_size, eps, lo, hi);
    } else {
      pgd_l2_rows_kernel<scalar_t, acc_t><<<N, kRowThreads, 0, stream>>>(
          x_adv.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), x0.const_data_ptr<scalar_t>(),
          out.mutable_data_ptr<scalar_t>(), D, step_size, eps, lo, hi);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace gatfast
