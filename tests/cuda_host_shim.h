// Host shim: lets g++ compile npl/kernels/rnn_kernels.cu, unchanged, as plain C++ (see
// tests/cuda_host.py).  The CUDA qualifiers are defined away, the built-in index variables become
// globals that the generated launchers set before each "thread", and the device math functions
// are the <cmath> overloads for float and double.
#pragma once
#include <cmath>

using std::tanh;
using std::fabs;
using std::fmin;
using std::fmax;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct npl_host_dim3 { unsigned x, y, z; };
static npl_host_dim3 gridDim, blockDim, blockIdx, threadIdx;

// One launch of a 1-D grid: the threads run one after the other, in increasing order or (reverse
// != 0) in decreasing order, so that a kernel whose threads depend on one another shows it.
#define NPL_HOST_LAUNCH(GRID, BLOCK, REVERSE, CALL)                                              \
    do {                                                                                          \
        gridDim = {GRID, 1, 1};                                                                   \
        blockDim = {BLOCK, 1, 1};                                                                 \
        blockIdx = threadIdx = {0, 0, 0};                                                         \
        unsigned long long npl_n = (unsigned long long)(GRID) * (BLOCK);                          \
        for (unsigned long long npl_s = 0; npl_s < npl_n; ++npl_s) {                              \
            unsigned long long npl_t = (REVERSE) ? npl_n - 1 - npl_s : npl_s;                     \
            blockIdx.x = (unsigned)(npl_t / (BLOCK));                                             \
            threadIdx.x = (unsigned)(npl_t % (BLOCK));                                            \
            CALL;                                                                                 \
        }                                                                                         \
    } while (0)
