// Shared declarations of the gatfast C++ ops: norm codes, argument checks
// that guard the kernels (Python validates first; these catch direct calls),
// and the CPU/CUDA kernel entry points that ops.cpp registers.
#pragma once

#include <ATen/ATen.h>
#include <optional>
#include <tuple>

namespace gatfast {

// Matches gatfast/_norms.py. Passed as an int so the schema stays simple.
enum NormCode : int64_t { kNoNorm = 0, kLinf = 1, kL2 = 2 };

inline void check_norm_code(int64_t norm) {
  TORCH_CHECK(norm == kNoNorm || norm == kLinf || norm == kL2,
              "gatfast: norm code must be 0 (none), 1 (linf) or 2 (l2), got ", norm);
}

inline void check_same(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.sizes() == b.sizes(), "gatfast: ", an, " and ", bn, " must have the same shape, got ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gatfast: ", an, " and ", bn,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), "gatfast: ", an, " and ", bn,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

// Rows: every op works per sample; D is the product of all dims but the first.
inline int64_t row_size(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1 && t.size(0) > 0, "gatfast: expected a non-empty batch");
  return t.numel() / t.size(0);
}

// Accumulation dtype: float32 for half/bfloat16/float32, float64 for float64.
inline at::ScalarType opmath_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

using PerturbFwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using PerturbBwdOut = std::tuple<at::Tensor, at::Tensor>;
using LossFwdOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The buffers every clean_adv_loss_fwd kernel fills: the per-row loss (in the math
// dtype), the hits of the clean and adversarial rows (2, N), and the logit gradients
// when asked for (empty otherwise).
struct LossBuffers {
  at::Tensor row_loss, hits, grad_clean, grad_adv;

  LossBuffers(const at::Tensor& logits_clean, const at::Tensor& logits_adv, bool compute_grad) {
    const int64_t N = logits_clean.size(0);
    row_loss = at::empty({N}, logits_clean.options().dtype(opmath_dtype(logits_clean.scalar_type())));
    hits = at::empty({2, N}, logits_clean.options().dtype(at::kLong));
    grad_clean = compute_grad ? at::empty_like(logits_clean) : at::empty({0}, logits_clean.options());
    grad_adv = compute_grad ? at::empty_like(logits_adv) : at::empty({0}, logits_adv.options());
  }
};

// The kernel entry points of one device (or one CPU instruction set): each takes
// contiguous tensors (ops.cpp makes them so) and allocates its outputs.
#define GATFAST_DECLARE_KERNELS(ns)                                                                          \
  namespace ns {                                                                                             \
  PerturbFwdOut perturb_fwd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,         \
                            int64_t norm, double lo, double hi, bool with_sq);                               \
  PerturbBwdOut perturb_bwd(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_sq,            \
                            const at::Tensor& delta, const std::optional<at::Tensor>& x,                     \
                            const at::Tensor& scale, double eps, int64_t norm, double lo, double hi,          \
                            double grad_scale, bool need_grad_x);                                            \
  void pgd_step(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,      \
                double eps, int64_t norm, double lo, double hi, at::Tensor& out);                            \
  LossFwdOut clean_adv_loss_fwd(const at::Tensor& logits_clean, const at::Tensor& logits_adv,                \
                                const at::Tensor& target, double alpha, bool compute_grad);                  \
  }

GATFAST_DECLARE_KERNELS(cpu)
#ifdef GATFAST_WITH_CUDA
GATFAST_DECLARE_KERNELS(cuda)
#endif

namespace cpu {
const char* isa();  // which compiled copy of the CPU kernels runs here: "avx2" or "base"
}  // namespace cpu

}  // namespace gatfast
