// CPU kernel of the fused clean + adversarial cross-entropy: per row, one pass
// for max and argmax, one for the log-sum-exp, one writing both logit gradients.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../common.h"
#include "row_math.h"

namespace gatfast {
namespace cpu {

namespace {

// Cross-entropy of one row; writes w * (softmax - onehot) into grad when grad != nullptr.
template <typename scalar_t, typename acc_t>
acc_t row_ce(const scalar_t* z, int64_t C, int64_t t, acc_t w, scalar_t* grad, bool* correct) {
  acc_t m = z[0];
  int64_t arg = 0;
  for (int64_t j = 1; j < C; ++j) {
    acc_t v = z[j];
    if (v > m || (std::isnan(v) && !std::isnan(m))) { m = v; arg = j; }  // first max, NaN wins like argmax
  }
  acc_t sum = row_sum<acc_t>(C, [&](int64_t j) { return std::exp(acc_t(z[j]) - m); });
  *correct = arg == t;
  if (grad != nullptr) {
    const acc_t inv = 1 / sum;
    for (int64_t j = 0; j < C; ++j) grad[j] = w * (std::exp(acc_t(z[j]) - m) * inv - (j == t ? acc_t(1) : acc_t(0)));
  }
  return m + std::log(sum) - acc_t(z[t]);
}

}  // namespace

LossFwdOut clean_adv_loss_fwd(const at::Tensor& logits_clean, const at::Tensor& logits_adv,
                              const at::Tensor& target, double alpha, bool compute_grad) {
  const int64_t N = logits_clean.size(0), C = logits_clean.size(1);
  auto acc_opts = logits_clean.options().dtype(opmath_dtype(logits_clean.scalar_type()));
  auto row_loss = at::empty({N}, acc_opts);
  auto hits = at::empty({2, N}, logits_clean.options().dtype(at::kLong));
  auto grad_clean = compute_grad ? at::empty_like(logits_clean) : at::empty({0}, logits_clean.options());
  auto grad_adv = compute_grad ? at::empty_like(logits_adv) : at::empty({0}, logits_adv.options());

  const int64_t* tp = target.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(tp[i] >= 0 && tp[i] < C, "gatfast: target[", i, "] = ", tp[i], " is outside [0, ", C, ")");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits_clean.scalar_type(), "gatfast_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* cp = logits_clean.const_data_ptr<scalar_t>();
    const scalar_t* ap = logits_adv.const_data_ptr<scalar_t>();
    scalar_t* gcp = compute_grad ? grad_clean.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gap = compute_grad ? grad_adv.mutable_data_ptr<scalar_t>() : nullptr;
    acc_t* lp = row_loss.mutable_data_ptr<acc_t>();
    int64_t* hp = hits.mutable_data_ptr<int64_t>();
    const acc_t a = alpha, wc = acc_t(alpha) / N, wa = acc_t(1 - alpha) / N;
    at::parallel_for(0, N, std::max<int64_t>(1, 8192 / C), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        bool ok_c = false, ok_a = false;
        acc_t ce_c = row_ce<scalar_t, acc_t>(cp + i * C, C, tp[i], wc, gcp ? gcp + i * C : nullptr, &ok_c);
        acc_t ce_a = row_ce<scalar_t, acc_t>(ap + i * C, C, tp[i], wa, gap ? gap + i * C : nullptr, &ok_a);
        lp[i] = a * ce_c + (1 - a) * ce_a;
        hp[i] = ok_c;
        hp[N + i] = ok_a;
      }
    });
  });
  auto loss = row_loss.sum() / N;
  // Separate sums so that no two outputs share storage (custom-op outputs must not alias).
  return {loss, grad_clean, grad_adv, hits.select(0, 0).sum(), hits.select(0, 1).sum()};
}

}  // namespace cpu
}  // namespace gatfast
