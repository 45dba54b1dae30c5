// Fused pointwise kernels for npl's LSTM and GRU steps (the CUDA executor of npl/gates.py).
//
// Each kernel computes, for one time step, exactly what the function of the same name in
// npl/gates.py computes with array code; the variable names are the same.  One thread handles one (unit k, batch
// column b) pair.  Layouts are npl's feature-major ones (contiguous):
//   LSTM  g [4H, B] gates in TensorFlow's order (i; j; f; o); c_prev, c, m, dm, dc [H, B]
//   GRU   g [3H, B] = (r; u; candidate); h_prev, h, rh, dh, dh_prev [H, B]
// Element n = k*B + b of an [H, B] array; gate block q of g holds it at g[q*H*B + n].
// Activations are tanh (the default of every TF cell); other activations use the array code.
// The kernels are defined for float and double through one macro, so the two are one text.
// Names carry the prefix npl_ and the dtype suffix _f32 / _f64.

template <typename T>
__device__ __forceinline__ T npl_sigmoid(T x) { return T(0.5) * tanh(T(0.5) * x) + T(0.5); }

#define NPL_DEFINE_KERNELS(T, SFX)                                                              \
extern "C" __global__ void npl_lstm_forward_##SFX(                                              \
    T* g, const T* c_prev, T* c, T* m, const T* w_i, const T* w_f, const T* w_o,                 \
    int has_peep, T cell_clip, bool* clip_mask, int B, int H)                                   \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    int k = n / B; long long HB = (long long)H * B;                                            \
    T cp = c_prev[n];                                                                           \
    T a_i = g[n], a_j = g[HB + n], a_f = g[2 * HB + n], a_o = g[3 * HB + n];               \
    if (has_peep) { a_i += w_i[k] * cp; a_f += w_f[k] * cp; }                                   \
    T i = npl_sigmoid(a_i), f = npl_sigmoid(a_f), j = tanh(a_j);                                \
    T cn = f * cp + i * j;                                                                      \
    if (cell_clip > 0) {                                                                        \
        clip_mask[n] = fabs(cn) <= cell_clip;                                                   \
        cn = fmin(fmax(cn, -cell_clip), cell_clip);                                             \
    }                                                                                           \
    if (has_peep) a_o += w_o[k] * cn;                                                           \
    T o = npl_sigmoid(a_o);                                                                     \
    g[n] = i; g[HB + n] = j; g[2 * HB + n] = f; g[3 * HB + n] = o;                         \
    c[n] = cn;                                                                                  \
    m[n] = o * tanh(cn);                                                                        \
}                                                                                               \
                                                                                                \
extern "C" __global__ void npl_lstm_backward_##SFX(                                             \
    const T* g, const T* c_prev, const T* c, const T* dm, T* dc, T* dg,                          \
    const T* w_i, const T* w_f, const T* w_o, int has_peep, const bool* clip_mask,              \
    int has_clip, int B, int H)                                                                 \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    int k = n / B; long long HB = (long long)H * B;                                            \
    T i = g[n], j = g[HB + n], f = g[2 * HB + n], o = g[3 * HB + n];                       \
    T tc = tanh(c[n]);                                                                          \
    T dg_o = dm[n] * tc;                                                                        \
    T dct = dc[n] + dm[n] * o * (1 - tc * tc);                                                  \
    dg_o *= o * (1 - o);                                                                        \
    if (has_peep) dct += dg_o * w_o[k];                                                         \
    if (has_clip && !clip_mask[n]) dct = 0;                                                     \
    T dg_i = dct * j * i * (1 - i);                                                             \
    T dg_j = dct * i * (1 - j * j);                                                             \
    T dg_f = dct * c_prev[n] * f * (1 - f);                                                     \
    T dcp = dct * f;                                                                            \
    if (has_peep) dcp += dg_i * w_i[k] + dg_f * w_f[k];                                         \
    dg[n] = dg_i; dg[HB + n] = dg_j; dg[2 * HB + n] = dg_f; dg[3 * HB + n] = dg_o;         \
    dc[n] = dcp;                                                                                \
}                                                                                               \
                                                                                                \
extern "C" __global__ void npl_gru_gates_forward_##SFX(                                         \
    T* g, const T* h_prev, T* rh, int B, int H)                                                 \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    long long HB = (long long)H * B;                                                            \
    T r = npl_sigmoid(g[n]);                                                                  \
    g[n] = r;                                                                                 \
    g[HB + n] = npl_sigmoid(g[HB + n]);                                                       \
    rh[n] = r * h_prev[n];                                                                      \
}                                                                                               \
                                                                                                \
extern "C" __global__ void npl_gru_state_forward_##SFX(                                         \
    T* g, const T* h_prev, T* h, int B, int H)                                                  \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    long long HB = (long long)H * B;                                                            \
    T cand = tanh(g[2 * HB + n]);                                                              \
    T u = g[HB + n];                                                                           \
    g[2 * HB + n] = cand;                                                                      \
    h[n] = cand + u * (h_prev[n] - cand);                                                       \
}                                                                                               \
                                                                                                \
extern "C" __global__ void npl_gru_backward_##SFX(                                              \
    const T* g, const T* h_prev, const T* dh, T* dg, T* dh_prev, int B, int H)                  \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    long long HB = (long long)H * B;                                                            \
    T u = g[HB + n], cand = g[2 * HB + n];                                                    \
    dg[HB + n] = dh[n] * (h_prev[n] - cand) * u * (1 - u);                                     \
    dg[2 * HB + n] = dh[n] * (1 - u) * (1 - cand * cand);                                      \
    dh_prev[n] = dh[n] * u;                                                                     \
}                                                                                               \
                                                                                                \
extern "C" __global__ void npl_gru_reset_backward_##SFX(                                        \
    const T* g, const T* h_prev, const T* drh, T* dh_prev, T* dg, int B, int H)                 \
{                                                                                               \
    int n = blockIdx.x * blockDim.x + threadIdx.x;                                              \
    if (n >= B * H) return;                                                                     \
    T r = g[n];                                                          \
    dg[n] = drh[n] * h_prev[n] * r * (1 - r);                            \
    dh_prev[n] += drh[n] * r;                                                                   \
}

NPL_DEFINE_KERNELS(float, f32)
NPL_DEFINE_KERNELS(double, f64)
