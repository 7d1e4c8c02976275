// Registers the gatfast::* op schemas and binds the CPU and CUDA kernels to them.
// Autograd and fake (meta) implementations are registered from Python
// (gatfast/_cpp_ops.py), where the backward formulas sit beside the other backends'.
#include <torch/library.h>

#include "common.h"

namespace gatfast {
namespace {

at::Tensor contig(const at::Tensor& t) { return t.contiguous(); }
std::optional<at::Tensor> contig(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return t;
  return t->contiguous();
}

void check_perturb_args(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                        int64_t norm, double lo, double hi) {
  check_norm_code(norm);
  row_size(delta);
  if (x.has_value()) check_same(delta, "delta", *x, "x");
  TORCH_CHECK(norm == kNoNorm || (eps > 0 && std::isfinite(eps)), "gatfast: eps must be finite and > 0, got ", eps);
  TORCH_CHECK(lo < hi, "gatfast: lo must be < hi, got lo=", lo, " hi=", hi);
}

// One set of wrappers, instantiated once per device namespace.
template <PerturbFwdOut (*Fwd)(const at::Tensor&, const std::optional<at::Tensor>&, double, int64_t,
                               double, double, bool)>
PerturbFwdOut perturb_fwd_impl(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                               int64_t norm, double lo, double hi, bool with_sq, double /*grad_scale*/) {
  // grad_scale is part of the schema only so that the registered backward can read it.
  check_perturb_args(delta, x, eps, norm, lo, hi);
  TORCH_CHECK(!with_sq || x.has_value(), "gatfast: with_sq needs x");
  return Fwd(contig(delta), contig(x), eps, norm, lo, hi, with_sq);
}

template <PerturbBwdOut (*Bwd)(const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                               const std::optional<at::Tensor>&, const at::Tensor&, double, int64_t,
                               double, double, double, bool)>
PerturbBwdOut perturb_bwd_impl(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_sq,
                               const at::Tensor& delta, const std::optional<at::Tensor>& x,
                               const at::Tensor& scale, double eps, int64_t norm, double lo, double hi,
                               double grad_scale, bool need_grad_x) {
  check_perturb_args(delta, x, eps, norm, lo, hi);
  check_same(grad_out, "grad_out", delta, "delta");
  TORCH_CHECK(scale.numel() == delta.size(0), "gatfast: scale must hold one value per sample");
  TORCH_CHECK(!need_grad_x || x.has_value(), "gatfast: need_grad_x needs x");
  std::optional<at::Tensor> gsq;
  if (grad_sq.has_value()) {
    TORCH_CHECK(x.has_value(), "gatfast: grad_sq needs x");
    TORCH_CHECK(grad_sq->numel() == delta.size(0), "gatfast: grad_sq must hold one value per sample");
    gsq = grad_sq->to(opmath_dtype(delta.scalar_type())).contiguous();
  }
  auto sc = scale.to(opmath_dtype(delta.scalar_type())).contiguous();
  return Bwd(contig(grad_out), gsq, contig(delta), contig(x), sc, eps, norm, lo, hi, grad_scale, need_grad_x);
}

void check_pgd_args(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
                    double eps, int64_t norm, double lo, double hi) {
  TORCH_CHECK(norm == kLinf || norm == kL2, "gatfast: pgd_step needs norm linf (1) or l2 (2), got ", norm);
  row_size(x_adv);
  check_same(x_adv, "x_adv", grad, "grad");
  check_same(x_adv, "x_adv", x0, "x0");
  TORCH_CHECK(step_size > 0 && std::isfinite(step_size), "gatfast: step_size must be finite and > 0");
  TORCH_CHECK(eps > 0 && std::isfinite(eps), "gatfast: eps must be finite and > 0, got ", eps);
  TORCH_CHECK(lo < hi, "gatfast: lo must be < hi");
}

template <void (*Step)(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, int64_t,
                       double, double, at::Tensor&)>
void pgd_step_out_impl(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
                       double eps, int64_t norm, double lo, double hi, at::Tensor out) {
  check_pgd_args(x_adv, grad, x0, step_size, eps, norm, lo, hi);
  check_same(out, "out", x_adv, "x_adv");
  // The schema declares `out` as the only tensor written: it must not alias an input
  // (gatfast.pgd_step copies for callers who pass out=x_adv).
  TORCH_CHECK(!out.is_alias_of(x0) && !out.is_alias_of(x_adv) && !out.is_alias_of(grad),
              "gatfast: pgd_step_out's out must not share memory with x_adv, grad or x0");
  if (out.is_contiguous()) {
    Step(contig(x_adv), contig(grad), contig(x0), step_size, eps, norm, lo, hi, out);
  } else {
    auto tmp = at::empty_like(x_adv, at::MemoryFormat::Contiguous);
    Step(contig(x_adv), contig(grad), contig(x0), step_size, eps, norm, lo, hi, tmp);
    out.copy_(tmp);
  }
}

template <void (*Step)(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, int64_t,
                       double, double, at::Tensor&)>
at::Tensor pgd_step_impl(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
                         double eps, int64_t norm, double lo, double hi) {
  check_pgd_args(x_adv, grad, x0, step_size, eps, norm, lo, hi);
  auto out = at::empty_like(x_adv, at::MemoryFormat::Contiguous);
  Step(contig(x_adv), contig(grad), contig(x0), step_size, eps, norm, lo, hi, out);
  return out;
}

template <LossFwdOut (*Loss)(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, bool)>
LossFwdOut loss_impl(const at::Tensor& logits_clean, const at::Tensor& logits_adv, const at::Tensor& target,
                     double alpha, bool compute_grad) {
  TORCH_CHECK(logits_clean.dim() == 2 && logits_clean.size(0) > 0 && logits_clean.size(1) > 0,
              "gatfast: logits_clean must be a non-empty (N, C) tensor");
  check_same(logits_clean, "logits_clean", logits_adv, "logits_adv");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits_clean.size(0),
              "gatfast: target must have shape (N,)");
  TORCH_CHECK(target.device() == logits_clean.device(), "gatfast: target must be on the logits' device");
  TORCH_CHECK(alpha >= 0 && alpha <= 1, "gatfast: alpha must be in [0, 1], got ", alpha);
  return Loss(contig(logits_clean), contig(logits_adv), target.to(at::kLong).contiguous(), alpha, compute_grad);
}

std::string cpu_isa() { return cpu::isa(); }

bool cuda_built() {
#ifdef GATFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(gatfast, m) {
  m.def("perturb_fwd(Tensor delta, Tensor? x, float eps, int norm, float lo, float hi, bool with_sq,"
        " float grad_scale)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("perturb_bwd(Tensor grad_out, Tensor? grad_sq, Tensor delta, Tensor? x, Tensor scale, float eps,"
        " int norm, float lo, float hi, float grad_scale, bool need_grad_x) -> (Tensor, Tensor)");
  m.def("pgd_step(Tensor x_adv, Tensor grad, Tensor x0, float step_size, float eps, int norm, float lo,"
        " float hi) -> Tensor");
  m.def("pgd_step_out(Tensor x_adv, Tensor grad, Tensor x0, float step_size, float eps, int norm, float lo,"
        " float hi, Tensor(a!) out) -> ()");
  m.def("clean_adv_loss_fwd(Tensor logits_clean, Tensor logits_adv, Tensor target, float alpha,"
        " bool compute_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("cuda_built() -> bool", &cuda_built);
  m.def("cpu_isa() -> str", &cpu_isa);
}

TORCH_LIBRARY_IMPL(gatfast, CPU, m) {
  m.impl("perturb_fwd", &perturb_fwd_impl<cpu::perturb_fwd>);
  m.impl("perturb_bwd", &perturb_bwd_impl<cpu::perturb_bwd>);
  m.impl("pgd_step", &pgd_step_impl<cpu::pgd_step>);
  m.impl("pgd_step_out", &pgd_step_out_impl<cpu::pgd_step>);
  m.impl("clean_adv_loss_fwd", &loss_impl<cpu::clean_adv_loss_fwd>);
}

#ifdef GATFAST_WITH_CUDA
TORCH_LIBRARY_IMPL(gatfast, CUDA, m) {
  m.impl("perturb_fwd", &perturb_fwd_impl<cuda::perturb_fwd>);
  m.impl("perturb_bwd", &perturb_bwd_impl<cuda::perturb_bwd>);
  m.impl("pgd_step", &pgd_step_impl<cuda::pgd_step>);
  m.impl("pgd_step_out", &pgd_step_out_impl<cuda::pgd_step>);
  m.impl("clean_adv_loss_fwd", &loss_impl<cuda::clean_adv_loss_fwd>);
}
#endif

}  // namespace gatfast

#ifdef GATFAST_PYTHON_MODULE
// A bare Python module: importing gatfast._C loads this library, which runs the
// registrations above. No pybind11: every entry point is a torch op.
#include <Python.h>
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif
