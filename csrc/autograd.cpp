// Autograd of the C++ ops, registered at the Autograd dispatch key. Written in C++
// because a Python autograd wrapper costs about 100 us a call, which dominates the
// small-batch loss. The Triton ops share the same formulas in gatfast/_autograd.py.
#include <torch/autograd.h>
#include <torch/library.h>

#include "common.h"

namespace gatfast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

c10::TypedOperatorHandle<PerturbFwdOut(const at::Tensor&, const std::optional<at::Tensor>&, double, int64_t,
                                       double, double, bool, double)>&
perturb_fwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gatfast::perturb_fwd", "")
                       .typed<PerturbFwdOut(const at::Tensor&, const std::optional<at::Tensor>&, double, int64_t,
                                            double, double, bool, double)>();
  return op;
}

c10::TypedOperatorHandle<PerturbBwdOut(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                                       const std::optional<at::Tensor>&, const at::Tensor&, double, int64_t, double,
                                       double, double, bool)>&
perturb_bwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gatfast::perturb_bwd", "")
                       .typed<PerturbBwdOut(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                                            const std::optional<at::Tensor>&, const at::Tensor&, double, int64_t,
                                            double, double, double, bool)>();
  return op;
}

c10::TypedOperatorHandle<LossFwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, bool)>&
loss_fwd_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("gatfast::clean_adv_loss_fwd", "")
                       .typed<LossFwdOut(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, bool)>();
  return op;
}

// out = clamp(x + project(delta)), sq = ||out - x||^2; scale is kept for backward, with no gradient.
class PerturbFunction : public torch::autograd::Function<PerturbFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& delta, const std::optional<at::Tensor>& x,
                               double eps, int64_t norm, double lo, double hi, bool with_sq, double grad_scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, sq, scale] = perturb_fwd_op().call(delta, x, eps, norm, lo, hi, with_sq, grad_scale);
    ctx->mark_non_differentiable({scale});
    ctx->save_for_backward({delta, x.has_value() ? *x : at::Tensor(), scale});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["norm"] = norm;
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["with_sq"] = with_sq;
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["x_needs_grad"] = x.has_value() && x->requires_grad();
    return {out, sq, scale};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& delta = saved[0];
    std::optional<at::Tensor> x;
    if (saved[1].defined()) x = saved[1];
    at::Tensor grad_out = grads[0].defined() ? grads[0] : at::zeros_like(delta);
    std::optional<at::Tensor> grad_sq;
    if (ctx->saved_data["with_sq"].toBool() && grads[1].defined()) grad_sq = grads[1];
    const bool need_grad_x = x.has_value() && ctx->saved_data["x_needs_grad"].toBool();
    auto [grad_delta, grad_x] = perturb_bwd_op().call(
        grad_out, grad_sq, delta, x, saved[2], ctx->saved_data["eps"].toDouble(), ctx->saved_data["norm"].toInt(),
        ctx->saved_data["lo"].toDouble(), ctx->saved_data["hi"].toDouble(), ctx->saved_data["grad_scale"].toDouble(),
        need_grad_x);
    return {grad_delta, need_grad_x ? grad_x : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The forward already holds d loss / d logits; backward scales them by the incoming gradient.
class CleanAdvLossFunction : public torch::autograd::Function<CleanAdvLossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits_clean, const at::Tensor& logits_adv,
                               const at::Tensor& target, double alpha, bool compute_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, grad_clean, grad_adv, correct_clean, correct_adv] =
        loss_fwd_op().call(logits_clean, logits_adv, target, alpha, compute_grad);
    ctx->mark_non_differentiable({grad_clean, grad_adv, correct_clean, correct_adv});
    ctx->save_for_backward({grad_clean, grad_adv});
    return {loss, grad_clean, grad_adv, correct_clean, correct_adv};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved[0].sym_numel() != 0,
                "gatfast: clean_adv_loss ran with compute_grad=False and cannot backpropagate");
    return {saved[0] * grads[0], saved[1] * grads[0], at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

PerturbFwdOut perturb_fwd_autograd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                                   int64_t norm, double lo, double hi, bool with_sq, double grad_scale) {
  auto r = PerturbFunction::apply(delta, x, eps, norm, lo, hi, with_sq, grad_scale);
  return {r[0], r[1], r[2]};
}

LossFwdOut loss_fwd_autograd(const at::Tensor& logits_clean, const at::Tensor& logits_adv, const at::Tensor& target,
                             double alpha, bool compute_grad) {
  auto r = CleanAdvLossFunction::apply(logits_clean, logits_adv, target, alpha, compute_grad);
  return {r[0], r[1], r[2], r[3], r[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(gatfast, Autograd, m) {
  m.impl("perturb_fwd", &perturb_fwd_autograd);
  m.impl("clean_adv_loss_fwd", &loss_fwd_autograd);
}

}  // namespace gatfast
