// Warp and block reductions for the gatfast CUDA kernels.
#pragma once

namespace gatfast {
namespace cuda {

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block; every thread gets the result. `buf` holds 32 values.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* buf) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // buf may still be read from a previous call
  if (lane == 0) buf[wid] = v;
  __syncthreads();
  if (wid == 0) {
    v = lane < nwarps ? buf[lane] : T(0);
    v = warp_sum(v);
    if (lane == 0) buf[0] = v;
  }
  __syncthreads();
  return buf[0];
}

}  // namespace cuda
}  // namespace gatfast
