// Small inline helpers shared by the CPU kernels, written so that the compiler
// vectorises the loops that use them (no calls, no data-dependent branches).
// Included once per ISA (GATFAST_ISA names the namespace), after isa_prelude.h.
namespace gatfast {
namespace cpu {
namespace GATFAST_ISA {

// By value and with plain selects (std::min/max return references, which keeps
// loops from vectorising); NaN stays NaN, as torch.clamp.
template <typename acc_t>
inline acc_t clampv(acc_t v, acc_t lo, acc_t hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// sign(g) as torch.sign has it: sign(0) = 0 and sign(NaN) = 0 (so a NaN gradient takes
// no step rather than a step of -eps), branch-free.
template <typename acc_t>
inline acc_t signv(acc_t g) {
  return acc_t(g > 0) - acc_t(g < 0);
}

// exp(x) for x <= 0 (log-sum-exp arguments) in float32, accurate to about 2 ulp:
// x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 Taylor polynomial, 2^n by bits.
// Written without calls or branches so that loops over it vectorise.
inline float exp_nonpos(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  // Round to nearest by the 1.5 * 2^23 trick (SSE2 has no vector round instruction).
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float e = p * scale;
  return x < -87.0f ? (x == x ? 0.0f : x) : e;  // underflow to 0; NaN stays NaN
}
inline double exp_nonpos(double x) { return std::exp(x); }

// Rows per parallel task: enough elements that a task outweighs its start cost.
inline int64_t row_grain(int64_t D) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1)); }

}  // namespace GATFAST_ISA
}  // namespace cpu
}  // namespace gatfast
