// CPU kernel of the fused clean + adversarial cross-entropy. Per row: one pass for
// max and argmax, one for exp (kept in a float scratch row) and its sum, one writing
// the logit gradient. Rows spread over threads; the loops vectorise.
// Included once per ISA (GATFAST_ISA names the namespace), after isa_prelude.h.

namespace gatfast {
namespace cpu {
namespace GATFAST_ISA {

namespace {

// Cross-entropy of one row; writes w * (softmax - onehot) into grad when grad != nullptr.
template <typename scalar_t, typename acc_t>
acc_t row_ce(const scalar_t* z, int64_t C, int64_t t, acc_t w, scalar_t* grad, acc_t* scratch, bool* correct) {
  acc_t m = z[0];
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < C; ++j) m = acc_t(z[j]) > m ? acc_t(z[j]) : m;
  int64_t arg = C;  // the first index that holds the maximum, as argmax
  for (int64_t j = 0; j < C; ++j) {
    if (acc_t(z[j]) == m) { arg = j; break; }
  }
  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < C; ++j) {
    scratch[j] = exp_nonpos(acc_t(z[j]) - m);
    sum += scratch[j];
  }
  *correct = arg == t;
  if (grad != nullptr) {
    const acc_t scale = w / sum;
#pragma omp simd
    for (int64_t j = 0; j < C; ++j) grad[j] = scratch[j] * scale;
    grad[t] = w * (scratch[t] / sum - acc_t(1));  // the one-hot term, at the target only
  }
  return m + std::log(sum) - acc_t(z[t]);
}

}  // namespace

LossFwdOut clean_adv_loss_fwd(const at::Tensor& logits_clean, const at::Tensor& logits_adv,
                              const at::Tensor& target, double alpha, bool compute_grad) {
  const int64_t N = logits_clean.size(0), C = logits_clean.size(1);
  LossBuffers out(logits_clean, logits_adv, compute_grad);
  auto &row_loss = out.row_loss, &hits = out.hits, &grad_clean = out.grad_clean, &grad_adv = out.grad_adv;

  const int64_t* tp = target.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK_VALUE(tp[i] >= 0 && tp[i] < C, "target[", i, "] = ", tp[i], " is outside the class range [0, ", C, ")");
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
      std::vector<acc_t> scratch(C);
      for (int64_t i = begin; i < end; ++i) {
        bool ok_c = false, ok_a = false;
        acc_t ce_c = row_ce<scalar_t, acc_t>(cp + i * C, C, tp[i], wc, gcp ? gcp + i * C : nullptr, scratch.data(), &ok_c);
        acc_t ce_a = row_ce<scalar_t, acc_t>(ap + i * C, C, tp[i], wa, gap ? gap + i * C : nullptr, scratch.data(), &ok_a);
        lp[i] = a * ce_c + (1 - a) * ce_a;
        hp[i] = ok_c;
        hp[N + i] = ok_a;
      }
    });
  });
  // The batch sums, sequentially (deterministic, and cheaper than three ATen reductions
  // for the small batches where per-op overhead dominates).
  auto loss = at::empty({}, row_loss.options());
  auto correct_clean = at::empty({}, hits.options());
  auto correct_adv = at::empty({}, hits.options());
  AT_DISPATCH_FLOATING_TYPES(row_loss.scalar_type(), "gatfast_loss_sum_cpu", [&] {
    const scalar_t* lp = row_loss.const_data_ptr<scalar_t>();
    const int64_t* hp = hits.const_data_ptr<int64_t>();
    double total = 0;
    int64_t cc = 0, ca = 0;
    for (int64_t i = 0; i < N; ++i) {
      total += lp[i];
      cc += hp[i];
      ca += hp[N + i];
    }
    *loss.mutable_data_ptr<scalar_t>() = static_cast<scalar_t>(total / N);
    *correct_clean.mutable_data_ptr<int64_t>() = cc;
    *correct_adv.mutable_data_ptr<int64_t>() = ca;
  });
  return {loss, grad_clean, grad_adv, correct_clean, correct_adv};
}

}  // namespace GATFAST_ISA
}  // namespace cpu
}  // namespace gatfast
