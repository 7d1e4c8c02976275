// CPU kernels of perturb (forward, backward) and pgd_step: one pass per sample
// row (two where an l2 norm must be known first), rows spread over threads with
// at::parallel_for. The norm and the presence of x are template parameters so the
// inner loops carry no branches and vectorise (`omp simd` allows the reductions to
// be reassociated). Math in opmath: float32, or float64 for float64 storage.
// Included once per ISA (GATFAST_ISA names the namespace), after isa_prelude.h.

namespace gatfast {
namespace cpu {
namespace GATFAST_ISA {

namespace {

template <int NORM, typename acc_t>
inline acc_t project_value(acc_t d, acc_t s, acc_t eps) {
  if constexpr (NORM == kLinf) return clampv<acc_t>(d, -eps, eps);
  if constexpr (NORM == kL2) return d * s;
  return d;
}

template <typename scalar_t, typename acc_t>
inline acc_t row_sumsq(const scalar_t* p, int64_t D) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < D; ++j) s += acc_t(p[j]) * acc_t(p[j]);
  return s;
}

template <typename scalar_t, int NORM, bool HAS_X>
void perturb_fwd_rows(const scalar_t* dp, const scalar_t* xp, scalar_t* op, at::opmath_type<scalar_t>* scp,
                      at::opmath_type<scalar_t>* sqp, int64_t N, int64_t D, double eps, double lo, double hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t e = eps, l = lo, h = hi;
  at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* d = dp + i * D;
      scalar_t* o = op + i * D;
      acc_t s = 1;
      if constexpr (NORM == kL2) {
        const acc_t n = std::sqrt(row_sumsq<scalar_t, acc_t>(d, D));
        s = n <= e ? acc_t(1) : e / n;  // a NaN norm makes the whole row NaN, as the reference
      }
      scp[i] = s;
      if constexpr (!HAS_X) {
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) o[j] = project_value<NORM, acc_t>(d[j], s, e);
      } else {
        const scalar_t* x = xp + i * D;
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) o[j] = clampv<acc_t>(acc_t(x[j]) + project_value<NORM, acc_t>(d[j], s, e), l, h);
        if (sqp != nullptr) {
          // A second pass over the row (still in cache): fused with the first, GCC's
          // omp-simd lowering keeps the loop scalar.
          acc_t sq = 0;
#pragma omp simd reduction(+ : sq)
          for (int64_t j = 0; j < D; ++j) sq += (acc_t(o[j]) - acc_t(x[j])) * (acc_t(o[j]) - acc_t(x[j]));
          sqp[i] = sq;
        }
      }
    }
  });
}

// Gradient with respect to the projected perturbation p, before the projection's
// Jacobian: the upstream gradient where x + p lies strictly inside the box (as
// torch.clamp), plus the squared-norm term. Values in, value out: loops over it vectorise.
template <typename scalar_t, int NORM, bool HAS_X, typename acc_t>
inline acc_t grad_wrt_p(acc_t dv, acc_t xv, acc_t gv, acc_t s, acc_t e, acc_t l, acc_t h, acc_t gs, acc_t gn2) {
  if constexpr (!HAS_X) {
    return gs * gv;
  } else {
    const acc_t v = xv + project_value<NORM, acc_t>(dv, s, e);
    const acc_t r = acc_t(scalar_t(clampv<acc_t>(v, l, h))) - xv;
    const acc_t val = gs * gv + gn2 * r;
    return ((v > l) & (v < h)) ? val : acc_t(0);
  }
}

template <typename scalar_t, int NORM, bool HAS_X>
void perturb_bwd_rows(const scalar_t* gp, const at::opmath_type<scalar_t>* gsqp, const scalar_t* dp,
                      const scalar_t* xp, const at::opmath_type<scalar_t>* scp, scalar_t* gdp, scalar_t* gxp,
                      int64_t N, int64_t D, double eps, double lo, double hi, double grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t e = eps, l = lo, h = hi, gs = grad_scale;
  at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* __restrict__ d = dp + i * D;
      const scalar_t* __restrict__ g = gp + i * D;
      const scalar_t* __restrict__ x = HAS_X ? xp + i * D : dp + i * D;  // x unused without HAS_X
      scalar_t* __restrict__ gd = gdp + i * D;
      const acc_t s = scp[i];
      const acc_t gn2 = gsqp != nullptr ? 2 * gsqp[i] : acc_t(0);
      const bool l2_active = NORM == kL2 && s < 1;
      if constexpr (NORM == kLinf) {
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          const acc_t dv = d[j];
          const acc_t gpj = grad_wrt_p<scalar_t, NORM, HAS_X, acc_t>(dv, x[j], g[j], s, e, l, h, gs, gn2);
          gd[j] = ((dv > -e) & (dv < e)) ? gpj : acc_t(0);
        }
      } else if (l2_active) {
        // s^3 / eps^2 * <delta, grad_p>: the rank-one term of the l2 projection's Jacobian.
        acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < D; ++j) {
          dot += acc_t(d[j]) * grad_wrt_p<scalar_t, NORM, HAS_X, acc_t>(d[j], x[j], g[j], s, e, l, h, gs, gn2);
        }
        const acc_t coef = dot * s * s * s / (e * e);
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          const acc_t dv = d[j];
          gd[j] = s * grad_wrt_p<scalar_t, NORM, HAS_X, acc_t>(dv, x[j], g[j], s, e, l, h, gs, gn2) - coef * dv;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) gd[j] = grad_wrt_p<scalar_t, NORM, HAS_X, acc_t>(d[j], x[j], g[j], s, e, l, h, gs, gn2);
      }
      if constexpr (HAS_X) {
        if (gxp != nullptr) {
          scalar_t* __restrict__ gx = gxp + i * D;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            const acc_t xv = x[j], gv = g[j], v = xv + project_value<NORM, acc_t>(d[j], s, e);
            const acc_t r = acc_t(scalar_t(clampv<acc_t>(v, l, h))) - xv;
            const acc_t outside = -gn2 * r;
            gx[j] = ((v > l) & (v < h)) ? gv : outside;
          }
        }
      }
    }
  });
}

// out may alias x_adv or grad: each element is read before it is written.
template <typename scalar_t>
void pgd_linf(const scalar_t* ap, const scalar_t* gp, const scalar_t* zp, scalar_t* op, int64_t n, double step_size,
              double eps, double lo, double hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t ss = step_size, e = eps, l = lo, h = hi;
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t j = begin; j < end; ++j) {
      const acc_t z = zp[j];
      const acc_t dd = clampv<acc_t>(acc_t(ap[j]) + ss * signv<acc_t>(gp[j]) - z, -e, e);
      op[j] = clampv<acc_t>(z + dd, l, h);
    }
  });
}

template <typename scalar_t>
void pgd_l2_rows(const scalar_t* ap, const scalar_t* gp, const scalar_t* zp, scalar_t* op, int64_t N, int64_t D,
                 double step_size, double eps, double lo, double hi) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t ss = step_size, e = eps, l = lo, h = hi;
  at::parallel_for(0, N, row_grain(D), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t *a = ap + i * D, *g = gp + i * D, *z = zp + i * D;
      scalar_t* o = op + i * D;
      const acc_t gn = std::sqrt(row_sumsq<scalar_t, acc_t>(g, D));
      const acc_t step = gn > 0 ? ss / gn : acc_t(0);  // a zero gradient takes no step
      acc_t dn2 = 0;
#pragma omp simd reduction(+ : dn2)
      for (int64_t j = 0; j < D; ++j) {
        const acc_t v = acc_t(a[j]) + step * acc_t(g[j]) - acc_t(z[j]);
        dn2 += v * v;
      }
      const acc_t dn = std::sqrt(dn2);
      const acc_t f = dn <= e ? acc_t(1) : e / dn;  // NaN stays NaN
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) {
        const acc_t zv = z[j];
        o[j] = clampv<acc_t>(zv + (acc_t(a[j]) + step * acc_t(g[j]) - zv) * f, l, h);
      }
    }
  });
}

// Calls fn with the norm code and the presence of x as compile-time constants.
template <typename F>
void with_norm_and_x(int64_t norm, bool has_x, F&& fn) {
  auto by_x = [&](auto norm_c) {
    if (has_x) fn(norm_c, std::true_type{});
    else fn(norm_c, std::false_type{});
  };
  if (norm == kLinf) by_x(std::integral_constant<int, kLinf>{});
  else if (norm == kL2) by_x(std::integral_constant<int, kL2>{});
  else by_x(std::integral_constant<int, kNoNorm>{});
}

}  // namespace

PerturbFwdOut perturb_fwd(const at::Tensor& delta, const std::optional<at::Tensor>& x, double eps,
                          int64_t norm, double lo, double hi, bool with_sq) {
  const int64_t N = delta.size(0), D = row_size(delta);
  auto acc_opts = delta.options().dtype(opmath_dtype(delta.scalar_type()));
  auto out = at::empty_like(delta);
  auto scale = at::empty({N}, acc_opts);
  auto sq = with_sq ? at::empty({N}, acc_opts) : at::empty({0}, acc_opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_norm_and_x(norm, x.has_value(), [&](auto norm_c, auto has_x) {
      perturb_fwd_rows<scalar_t, decltype(norm_c)::value, decltype(has_x)::value>(
          delta.const_data_ptr<scalar_t>(), x.has_value() ? x->const_data_ptr<scalar_t>() : nullptr,
          out.mutable_data_ptr<scalar_t>(), scale.mutable_data_ptr<acc_t>(),
          with_sq ? sq.mutable_data_ptr<acc_t>() : nullptr, N, D, eps, lo, hi);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, delta.scalar_type(), "gatfast_perturb_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    with_norm_and_x(norm, x.has_value(), [&](auto norm_c, auto has_x) {
      perturb_bwd_rows<scalar_t, decltype(norm_c)::value, decltype(has_x)::value>(
          grad_out.const_data_ptr<scalar_t>(), grad_sq.has_value() ? grad_sq->const_data_ptr<acc_t>() : nullptr,
          delta.const_data_ptr<scalar_t>(), x.has_value() ? x->const_data_ptr<scalar_t>() : nullptr,
          scale.const_data_ptr<acc_t>(), grad_delta.mutable_data_ptr<scalar_t>(),
          need_grad_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr, N, D, eps, lo, hi, grad_scale);
    });
  });
  return {grad_delta, grad_x};
}

void pgd_step(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x0, double step_size,
              double eps, int64_t norm, double lo, double hi, at::Tensor& out) {
  const int64_t N = x_adv.size(0), D = row_size(x_adv);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x_adv.scalar_type(), "gatfast_pgd_step_cpu", [&] {
    const scalar_t* ap = x_adv.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* zp = x0.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    if (norm == kLinf) pgd_linf(ap, gp, zp, op, N * D, step_size, eps, lo, hi);
    else pgd_l2_rows(ap, gp, zp, op, N, D, step_size, eps, lo, hi);
  });
}

}  // namespace GATFAST_ISA
}  // namespace cpu
}  // namespace gatfast
