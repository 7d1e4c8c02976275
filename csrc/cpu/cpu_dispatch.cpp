// Chooses, once, which compiled copy of the CPU kernels runs: AVX2 + FMA where the
// processor has both, else the baseline. GATFAST_CPU_ISA=base forces the baseline
// (the tests check both copies against the reference).
#include <cstdlib>
#include <cstring>

#include "../common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GATFAST_HAVE_AVX2_COPY 1
#endif

namespace gatfast {
namespace cpu {

GATFAST_DECLARE_KERNELS(base)
#ifdef GATFAST_HAVE_AVX2_COPY
GATFAST_DECLARE_KERNELS(avx2)
#endif

namespace {
bool use_avx2() {
#ifdef GATFAST_HAVE_AVX2_COPY
  static const bool yes = [] {
    const char* forced = std::getenv("GATFAST_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "base") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
#else
  return false;
#endif
}
}  // namespace

#ifdef GATFAST_HAVE_AVX2_COPY
#define GATFAST_CPU_CALL(fn, ...) (use_avx2() ? avx2::fn(__VA_ARGS__) : base::fn(__VA_ARGS__))
#else
#define GATFAST_CPU_CALL(fn, ...) base::fn(__VA_ARGS__)
#endif

PerturbFwdOut perturb_fwd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps, int64_t norm,
                          double lo, double hi, bool with_sq) {
  return GATFAST_CPU_CALL(perturb_fwd, delta, x, eps, norm, lo, hi, with_sq);
}

PerturbBwdOut perturb_bwd(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_sq,
                          const at::Tensor& delta, const std::optional<at::Tensor>& x, const at::Tensor& scale,
                          double eps, int64_t norm, double lo, double hi, double grad_scale, bool need_grad_x) {
  return GATFAST_CPU_CALL(perturb_bwd, grad_out, grad_sq, delta, x, scale, eps, norm, lo, hi, grad_scale, need_grad_x);
}

void pgd_step(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size, double eps,
              int64_t norm, double lo, double hi, at::Tensor& out) {
  GATFAST_CPU_CALL(pgd_step, x_adv, grad, x0, step_size, eps, norm, lo, hi, out);
}

LossFwdOut clean_adv_loss_fwd(const at::Tensor& logits_clean, const at::Tensor& logits_adv, const at::Tensor& target,
                              double alpha, bool compute_grad) {
  return GATFAST_CPU_CALL(clean_adv_loss_fwd, logits_clean, logits_adv, target, alpha, compute_grad);
}

const char* isa() { return use_avx2() ? "avx2" : "base"; }

}  // namespace cpu
}  // namespace gatfast
