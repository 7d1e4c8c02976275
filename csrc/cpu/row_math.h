// Small inline helpers shared by the CPU kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace gatfast {
namespace cpu {

template <typename acc_t>
inline acc_t clampv(acc_t v, acc_t lo, acc_t hi) {
  return std::min(std::max(v, lo), hi);
}

// Sum of f(j) for j in [0, D) with 8 independent partial sums, so that the
// compiler can vectorise the loop without reassociating one accumulator.
template <typename acc_t, typename F>
inline acc_t row_sum(int64_t D, F f) {
  acc_t part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= D; j += 8) {
    for (int k = 0; k < 8; ++k) part[k] += f(j + k);
  }
  acc_t tail = 0;
  for (; j < D; ++j) tail += f(j);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])) + tail;
}

// Rows per parallel task: enough elements that a task outweighs its start cost.
inline int64_t row_grain(int64_t D) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(D, 1)); }

}  // namespace cpu
}  // namespace gatfast
