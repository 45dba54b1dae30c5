/* Fused pointwise kernels for the backward of npl's LSTM and GRU steps on the CPU (float32).
 *
 * The third executor of the formulas in npl/gates.py (the first is NumPy/CuPy array code, the
 * second the CUDA kernels in rnn_kernels.cu).  Each function computes, for one time step, what the
 * function of the same name in npl/gates.py computes with 10-25 separate array passes, in one pass
 * over the data; the variable names are the same.  Compiled on first use by npl/kernels/cpu.py
 * with the system C compiler (-O3, the host's vector instructions) and loaded with ctypes; where
 * no compiler is found npl uses the array code.
 *
 * The forward keeps its transcendentals in NumPy: its cost is five sigmoid/tanh evaluations per
 * unit, and NumPy's own SIMD tanh does those faster than this file's portable npl_tanhf (measured
 * on the C1 benchmark, B=128 H=128: a fully fused forward step took 143 us against 69 us for the
 * array code).  So the forward runs one NumPy tanh over all four gates and this file fuses what
 * is between the tanh calls (npl_lstm_forward_combine_f32).  The backward needs one tanh per unit
 * and is otherwise ~20 multiply-adds spread over many small arrays, which is what fusing saves
 * (65 us against 97 us per step).
 *
 * Layout (npl's feature-major one): a step's gates are rows of B contiguous floats, gate block q
 * holds unit k in row q*H + k; row r of g starts at g + r*ldg (the backward's gradient slab has a
 * row stride of T*B).  States c_prev, c, dm, dc, h_prev, dh, ... are contiguous [H, B].  The inner
 * loop runs over the batch column b, so the compiler vectorises it; tanh is computed by npl_tanhf
 * below (branch-free, so it vectorises too) instead of libm's scalar tanhf.
 */
#include <stdint.h>
#include <string.h>

#define RESTRICT __restrict__

/* e^x for x in [-88, 88] (Cephes' expf: range reduction by ln 2, degree-6 polynomial; ~1 ulp). */
static inline float npl_expf(float x)
{
    x = x > 88.0f ? 88.0f : (x < -88.0f ? -88.0f : x);
    float z = x * 1.44269504088896341f + 0.5f;
    /* floor(z) without libm: round-to-nearest via the 1.5 * 2^23 trick, then correct */
    float n = (z + 12582912.0f) - 12582912.0f;
    n = n > z ? n - 1.0f : n;
    x = x - n * 0.693359375f + n * 2.12194440e-4f;
    float xx = x * x;
    float p = ((((1.9875691500e-4f * x + 1.3981999507e-3f) * x + 8.3334519073e-3f) * x
                + 4.1665795894e-2f) * x + 1.6666665459e-1f) * x + 5.0000001201e-1f;
    p = p * xx + x + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;          /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* tanh(x): odd polynomial for |x| < 0.625 (Cephes' tanhf), 1 - 2 / (e^{2|x|} + 1) beyond it. */
static inline float npl_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    float e = npl_expf(2.0f * ax);
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0.0f ? -big : big;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z
                    + 1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    return __builtin_copysignf(ax < 0.625f ? small : big, x);   /* odd: keeps -0.0 */
}

static inline float npl_sigmoidf(float x) { return 0.5f * npl_tanhf(0.5f * x) + 0.5f; }

/* Elementwise tanh and sigmoid of n contiguous floats (tested against NumPy). */
void npl_tanh_f32(const float* RESTRICT x, float* RESTRICT y, int64_t n)
{
    for (int64_t k = 0; k < n; k++) y[k] = npl_tanhf(x[k]);
}

void npl_sigmoid_f32(const float* RESTRICT x, float* RESTRICT y, int64_t n)
{
    for (int64_t k = 0; k < n; k++) y[k] = npl_sigmoidf(x[k]);
}

/* The middle of lstm_forward_pointwise when the caller folded the sigmoid's 1/2 into the weights
 * and already took tanh of every gate row (g = tanh(a_i/2), tanh(a_j), tanh(a_f/2), tanh(a_o/2)):
 * i, f, o = 0.5 t + 0.5 in place, and c = f * c_prev + i * j.  No transcendental here: NumPy's tanh
 * over the whole [4H, B] block is faster than any portable C one.  Compiled without FMA
 * contraction, so the results are bit for bit those of the array code. */
void npl_lstm_forward_combine_f32(float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                                  float* RESTRICT c, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gi = g + k * ldg;
        const float* RESTRICT gj = g + (H + k) * ldg;
        float* RESTRICT gf = g + (2 * H + k) * ldg;
        float* RESTRICT go = g + (3 * H + k) * ldg;
        const float* RESTRICT cp = c_prev + k * B;
        float* RESTRICT ck = c + k * B;
        for (int64_t b = 0; b < B; b++) {
            float i = 0.5f * gi[b] + 0.5f;
            float f = 0.5f * gf[b] + 0.5f;
            gi[b] = i;
            gf[b] = f;
            go[b] = 0.5f * go[b] + 0.5f;
            ck[b] = f * cp[b] + i * gj[b];
        }
    }
}

/* The GRU gates after one NumPy tanh over g[:2H] = tanh(a_r/2), tanh(a_u/2) (prescaled weights):
 * r, u = 0.5 t + 0.5 in place, rh = r * h_prev. */
void npl_gru_gates_combine_f32(float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                               float* RESTRICT rh, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gr = g + k * ldg;
        float* RESTRICT gu = g + (H + k) * ldg;
        const float* RESTRICT hp = h_prev + k * B;
        float* RESTRICT rhk = rh + k * B;
        for (int64_t b = 0; b < B; b++) {
            float r = 0.5f * gr[b] + 0.5f;
            gr[b] = r;
            gu[b] = 0.5f * gu[b] + 0.5f;
            rhk[b] = r * hp[b];
        }
    }
}

/* lstm_backward_pointwise: from the gates g (i, j, f, o), c_prev, c, dm = dL/dm and dc = the
 * carried dL/dc, writes dg = dL/d(pre-activations) (row stride lddg) and dc = dL/dc_prev.
 * clip_mask (or NULL): the cell clip passed the gradient where it is 1. */
void npl_lstm_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                           const float* RESTRICT c, const float* RESTRICT dm, float* RESTRICT dc,
                           float* RESTRICT dg, int64_t lddg,
                           const float* w_i, const float* w_f, const float* w_o,
                           const uint8_t* RESTRICT clip_mask, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gi = g + k * ldg;
        const float* RESTRICT gj = g + (H + k) * ldg;
        const float* RESTRICT gf = g + (2 * H + k) * ldg;
        const float* RESTRICT go = g + (3 * H + k) * ldg;
        float* RESTRICT dgi = dg + k * lddg;
        float* RESTRICT dgj = dg + (H + k) * lddg;
        float* RESTRICT dgf = dg + (2 * H + k) * lddg;
        float* RESTRICT dgo = dg + (3 * H + k) * lddg;
        const float* RESTRICT cp = c_prev + k * B;
        const float* RESTRICT ck = c + k * B;
        const float* RESTRICT dmk = dm + k * B;
        float* RESTRICT dck = dc + k * B;
        const float pi = w_i ? w_i[k] : 0.0f, pf = w_f ? w_f[k] : 0.0f, po = w_o ? w_o[k] : 0.0f;
        const uint8_t* RESTRICT cm = clip_mask ? clip_mask + k * B : 0;
        for (int64_t b = 0; b < B; b++) {
            float i = gi[b], j = gj[b], f = gf[b], o = go[b];
            float tc = npl_tanhf(ck[b]);
            float dg_o = dmk[b] * tc * o * (1.0f - o);
            float dct = dck[b] + dmk[b] * o * (1.0f - tc * tc) + dg_o * po;
            if (cm) dct = cm[b] ? dct : 0.0f;
            float dg_i = dct * j * i * (1.0f - i);
            float dg_j = dct * i * (1.0f - j * j);
            float dg_f = dct * cp[b] * f * (1.0f - f);
            dgi[b] = dg_i; dgj[b] = dg_j; dgf[b] = dg_f; dgo[b] = dg_o;
            dck[b] = dct * f + dg_i * pi + dg_f * pf;
        }
    }
}

/* gru_backward_pointwise: dg[H:2H] = dL/da_u, dg[2H:] = dL/da_c, dh_prev = dh * u. */
void npl_gru_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                          const float* RESTRICT dh, float* RESTRICT dg, int64_t lddg,
                          float* RESTRICT dh_prev, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gu = g + (H + k) * ldg;
        const float* RESTRICT gc = g + (2 * H + k) * ldg;
        float* RESTRICT dgu = dg + (H + k) * lddg;
        float* RESTRICT dgc = dg + (2 * H + k) * lddg;
        const float* RESTRICT hp = h_prev + k * B;
        const float* RESTRICT dhk = dh + k * B;
        float* RESTRICT dhp = dh_prev + k * B;
        for (int64_t b = 0; b < B; b++) {
            float u = gu[b], cand = gc[b], d = dhk[b];
            dgu[b] = d * (hp[b] - cand) * u * (1.0f - u);
            dgc[b] = d * (1.0f - u) * (1.0f - cand * cand);
            dhp[b] = d * u;
        }
    }
}

/* gru_reset_backward: dg[:H] = drh * h_prev * r (1 - r); dh_prev += drh * r. */
void npl_gru_reset_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                                const float* RESTRICT drh, float* RESTRICT dh_prev,
                                float* RESTRICT dg, int64_t lddg, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gr = g + k * ldg;
        float* RESTRICT dgr = dg + k * lddg;
        const float* RESTRICT hp = h_prev + k * B;
        const float* RESTRICT d = drh + k * B;
        float* RESTRICT dhp = dh_prev + k * B;
        for (int64_t b = 0; b < B; b++) {
            float r = gr[b];
            dgr[b] = d[b] * hp[b] * r * (1.0f - r);
            dhp[b] += d[b] * r;
        }
    }
}
