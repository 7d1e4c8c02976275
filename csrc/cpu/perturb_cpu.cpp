// CPU kernels of perturb (forward, backward) and pgd_step: one pass per sample
// row, rows spread over threads with at::parallel_for. Math in opmath (float32,
// or float64 for float64 storage).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../common.h"
#include "row_math.h"

namespace gatfast {
namespace cpu {

PerturbFwdOut perturb_fwd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                          int64_t norm, double lo, double hi, bool with_sq) {
  const int64_t N = delta.size(0), D = row_size(delta);
  auto acc_opts = delta.options().dtype(opmath_dtype(delta.scalar_type()));
  auto out = at::empty_like(delta);
  auto scale = at::empty({N}, acc_opts);
  auto sq = with_sq ? at::empty({N}, acc_opts) : at::empty({0}, acc_opts);
  const bool has_x = x.has_value();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dp = delta.const_data_ptr<scalar_t>();
    const scalar_t* xp = has_x ? x->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    acc_t* scp = scale.mutable_data_ptr<acc_t>();
    acc_t* sqp = with_sq ? sq.mutable_data_ptr<acc_t>() : nullptr;
    const acc_t e = eps, l = lo, h = hi;
    at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* d = dp + i * D;
        scalar_t* o = op + i * D;
        acc_t s = 1;
        if (norm == kL2) {
          acc_t n = std::sqrt(row_sum<acc_t>(D, [&](int64_t j) { acc_t v = d[j]; return v * v; }));
          s = n > e ? e / n : acc_t(1);
        }
        scp[i] = s;
        auto proj = [&](int64_t j) -> acc_t {
          acc_t v = d[j];
          if (norm == kLinf) return clampv<acc_t>(v, -e, e);
          if (norm == kL2) return v * s;
          return v;
        };
        if (!has_x) {
          for (int64_t j = 0; j < D; ++j) o[j] = proj(j);
          continue;
        }
        const scalar_t* xr = xp + i * D;
        for (int64_t j = 0; j < D; ++j) o[j] = clampv<acc_t>(acc_t(xr[j]) + proj(j), l, h);
        if (with_sq) {
          sqp[i] = row_sum<acc_t>(D, [&](int64_t j) { acc_t r = acc_t(o[j]) - acc_t(xr[j]); return r * r; });
        }
      }
    });
  });
  return {out, sq, scale};
}

PerturbBwdOut perturb_bwd(const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_sq,
                          const at::Tensor& delta, const std::optional<at::Tensor>& x,
                          const at::Tensor& scale, double eps, int64_t norm, double lo, double hi,
                          double grad_scale, bool need_grad_x) {
  const int64_t N = delta.size(0), D = row_size(delta);
  auto grad_delta = at::empty_like(delta);
  auto grad_x = need_grad_x ? at::empty_like(delta) : at::empty({0}, delta.options());
  const bool has_x = x.has_value(), has_gsq = grad_sq.has_value();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* dp = delta.const_data_ptr<scalar_t>();
    const scalar_t* xp = has_x ? x->const_data_ptr<scalar_t>() : nullptr;
    const acc_t* scp = scale.const_data_ptr<acc_t>();
    const acc_t* gsqp = has_gsq ? grad_sq->const_data_ptr<acc_t>() : nullptr;
    scalar_t* gdp = grad_delta.mutable_data_ptr<scalar_t>();
    scalar_t* gxp = need_grad_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t e = eps, l = lo, h = hi, gs = grad_scale;
    at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* d = dp + i * D;
        const scalar_t* g = gp + i * D;
        const scalar_t* xr = has_x ? xp + i * D : nullptr;
        const acc_t s = scp[i];
        const acc_t gn2 = has_gsq ? 2 * gsqp[i] : acc_t(0);
        // Gradient with respect to the projected perturbation p, before the projection's Jacobian.
        auto grad_p = [&](int64_t j) -> acc_t {
          acc_t dv = d[j];
          acc_t p = norm == kLinf ? clampv<acc_t>(dv, -e, e) : (norm == kL2 ? dv * s : dv);
          if (!has_x) return gs * acc_t(g[j]);
          acc_t xv = xr[j], v = xv + p;
          if (!(v > l && v < h)) return 0;  // torch.clamp passes no gradient at the bounds
          acc_t r = acc_t(scalar_t(clampv<acc_t>(v, l, h))) - xv;
          return gs * acc_t(g[j]) + gn2 * r;
        };
        const bool l2_active = norm == kL2 && s < 1;
        acc_t coef = 0;  // s^3 / eps^2 * <delta, grad_p>
        if (l2_active) coef = row_sum<acc_t>(D, [&](int64_t j) { return acc_t(d[j]) * grad_p(j); }) * s * s * s / (e * e);
        scalar_t* gd = gdp + i * D;
        for (int64_t j = 0; j < D; ++j) {
          acc_t dv = d[j], gpj = grad_p(j);
          if (norm == kLinf) gd[j] = (dv > -e && dv < e) ? gpj : acc_t(0);
          else if (l2_active) gd[j] = s * gpj - coef * dv;
          else gd[j] = gpj;
        }
        if (need_grad_x) {
          scalar_t* gx = gxp + i * D;
          for (int64_t j = 0; j < D; ++j) {
            acc_t dv = d[j];
            acc_t p = norm == kLinf ? clampv<acc_t>(dv, -e, e) : (norm == kL2 ? dv * s : dv);
            acc_t xv = xr[j], v = xv + p;
            bool inside = v > l && v < h;
            acc_t r = acc_t(scalar_t(clampv<acc_t>(v, l, h))) - xv;
            gx[j] = (inside ? acc_t(g[j]) : acc_t(0)) - (inside ? acc_t(0) : gn2 * r);
          }
        }
      }
    });
  });
  return {grad_delta, grad_x};
}

void pgd_step(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
              double eps, int64_t norm, double lo, double hi, at::Tensor& out) {
  const int64_t N = x_adv.size(0), D = row_size(x_adv);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "gatfast_pgd_step_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ap = x_adv.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* zp = x0.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const acc_t ss = step_size, e = eps, l = lo, h = hi;
    if (norm == kLinf) {
      at::parallel_for(0, N * D, 32768, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
          acc_t g = gp[j], z = zp[j];
          acc_t sg = g > 0 ? acc_t(1) : (g < 0 ? acc_t(-1) : g);  // sign(0) = 0; NaN stays NaN
          acc_t dd = clampv<acc_t>(acc_t(ap[j]) + ss * sg - z, -e, e);
          op[j] = clampv<acc_t>(z + dd, l, h);
        }
      });
      return;
    }
    at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t *a = ap + i * D, *g = gp + i * D, *z = zp + i * D;
        scalar_t* o = op + i * D;
        acc_t gn = std::sqrt(row_sum<acc_t>(D, [&](int64_t j) { acc_t v = g[j]; return v * v; }));
        const acc_t step = gn > 0 ? ss / gn : acc_t(0);  // a zero gradient takes no step
        auto moved = [&](int64_t j) -> acc_t { return acc_t(a[j]) + step * acc_t(g[j]) - acc_t(z[j]); };
        acc_t dn = std::sqrt(row_sum<acc_t>(D, [&](int64_t j) { acc_t v = moved(j); return v * v; }));
        const acc_t f = dn > e ? e / dn : acc_t(1);
        for (int64_t j = 0; j < D; ++j) o[j] = clampv<acc_t>(acc_t(z[j]) + moved(j) * f, l, h);
      }
    });
  });
}

}  // namespace cpu
}  // namespace gatfast
