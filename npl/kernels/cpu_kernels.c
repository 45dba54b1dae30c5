/* Fused pointwise kernels for the backward of npl's LSTM and GRU steps on the CPU (float32).
 *
 * The third executor of the formulas in npl/gates.py (the first is NumPy/CuPy array code, the
 * second the CUDA kernels in rnn_kernels.cu).  Each function computes, for one time step, what the
 * function of the same name in npl/gates.py computes with 10-25 separate array passes, in one pass
 * over the data; the variable names are the same.  Compiled on first use by npl/kernels/cpu.py
 * with the system C compiler (-O3, the host's vector instructions) and loaded with ctypes; where
 * no compiler is found npl uses the array code.
 *
 * Step kernels (called from the Python loop).  Their forward keeps its transcendentals in NumPy:
 * its cost is five sigmoid/tanh evaluations per unit, and NumPy's own SIMD tanh does those faster
 * than this file's accurate npl_tanhf (measured on the C1 benchmark, B=128 H=128: a fully fused
 * forward step with npl_tanhf took 143 us against 69 us for the array code).  So the Python
 * loop's forward runs one NumPy tanh over all four gates and this file fuses what is between the
 * tanh calls (npl_lstm_forward_combine_f32).  The backward needs one tanh per unit and is
 * otherwise ~20 multiply-adds spread over many small arrays, which is what fusing saves (65 us
 * against 97 us per step).
 *
 * Sequence loops (the end of this file).  The whole time loop of a pass, with the recurrent GEMM
 * through NumPy's own sgemm and a rational tanh as fast as NumPy's, so no Python runs between
 * steps (C1 LSTM forward+backward 28.3 -> 26.0 ms, C4 1.47 -> 1.03 ms, one thread).
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

/* tanh(x) as a rational function on [-7.905, 7.905] (odd degree-13 numerator over even degree-6
 * denominator, the minimax form TensorFlow's CPU kernels evaluate through Eigen), +-1 beyond it
 * (where float32 tanh rounds to +-1), x itself for |x| < 4e-4.  ~0.4 ns per value vectorised
 * against npl_tanhf's 1.2; within 4e-7 of tanh (tested against float64). */
static inline float npl_mul_add(float a, float b, float c)
{
#ifdef __FMA__
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

static inline float npl_tanhf_rational(float x)
{
    const float lim = 7.90531110763549805f;
    float xc = x > lim ? lim : (x < -lim ? -lim : x);
    float x2 = xc * xc;
    float p = npl_mul_add(x2, -2.76076847742355e-16f, 2.00018790482477e-13f);
    p = npl_mul_add(x2, p, -8.60467152213735e-11f);
    p = npl_mul_add(x2, p, 5.12229709037114e-08f);
    p = npl_mul_add(x2, p, 1.48572235717979e-05f);
    p = npl_mul_add(x2, p, 6.37261928875436e-04f);
    p = npl_mul_add(x2, p, 4.89352455891786e-03f);
    p = p * xc;
    float q = npl_mul_add(x2, 1.19825839466702e-06f, 1.18534705686654e-04f);
    q = npl_mul_add(x2, q, 2.26843463243900e-03f);
    q = npl_mul_add(x2, q, 4.89352518554385e-03f);
    float y = p / q;
    return (x < 4e-4f && x > -4e-4f) ? x : y;
}

static inline float npl_sigmoidf_rational(float x) { return 0.5f * npl_tanhf_rational(0.5f * x) + 0.5f; }


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
 * clip_mask (or NULL): the cell clip passed the gradient where it is 1.  `rational`: recompute
 * tanh(c) with the rational tanh, as the C loops' forward computed it (a constant at each call
 * site, so each caller gets its own vectorised copy). */
static inline __attribute__((always_inline)) void
lstm_backward_body(const float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                   const float* RESTRICT c, const float* RESTRICT dm, float* RESTRICT dc,
                   float* RESTRICT dg, int64_t lddg, const float* w_i, const float* w_f,
                   const float* w_o, const uint8_t* RESTRICT clip_mask, int64_t H, int64_t B,
                   const int rational)
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
            float tc = rational ? npl_tanhf_rational(ck[b]) : npl_tanhf(ck[b]);
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

void npl_lstm_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                           const float* RESTRICT c, const float* RESTRICT dm, float* RESTRICT dc,
                           float* RESTRICT dg, int64_t lddg,
                           const float* w_i, const float* w_f, const float* w_o,
                           const uint8_t* RESTRICT clip_mask, int64_t H, int64_t B)
{
    lstm_backward_body(g, ldg, c_prev, c, dm, dc, dg, lddg, w_i, w_f, w_o, clip_mask, H, B, 0);
}

/* The same for the C loops (plain cells), with the forward's rational tanh of c. */
static void lstm_backward_rational(const float* RESTRICT g, int64_t ldg,
                                   const float* RESTRICT c_prev, const float* RESTRICT c,
                                   const float* RESTRICT dm, float* RESTRICT dc,
                                   float* RESTRICT dg, int64_t lddg, int64_t H, int64_t B)
{
    lstm_backward_body(g, ldg, c_prev, c, dm, dc, dg, lddg, 0, 0, 0, 0, H, B, 1);
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

/* ================================================================== whole-sequence loops
 * The sequence passes of npl/cells.py for the common case (tanh activations, no peepholes, cell
 * clip, projection, sequence_length mask or state dropout) with the time loop in C: per step one
 * call of the BLAS's sgemm for the recurrent product and one pass of gate math, no Python between
 * steps.  The sgemm is the one NumPy itself uses: npl/kernels/cpu.py finds cblas_sgemm in the
 * OpenBLAS that NumPy loaded and passes its address (`sgemm` below), after checking it on a small
 * product against numpy.matmul; where it finds none, the Python loop runs.  Same slabs, same
 * layout and the same formulas as the Python loop (and as npl/gates.py, which tests compare
 * against); the forward's tanh is the rational one below instead of NumPy's, so the two paths
 * agree to a few float32 ulps, not bit for bit.
 *
 * The integer arguments are passed as int64: on x86-64 (the only place cpu.py enables this) an
 * LP64 cblas_sgemm reads the low 32 bits of the same registers and stack slots, an ILP64 one all
 * 64, so either interface receives the right values. */
typedef void (*npl_sgemm_fn)(int64_t order, int64_t transa, int64_t transb, int64_t m, int64_t n,
                             int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                             int64_t ldb, float beta, float* c, int64_t ldc);
enum { NPL_ROW_MAJOR = 101, NPL_NO_TRANS = 111, NPL_TRANS = 112 };

void npl_tanh_rational_f32(const float* RESTRICT x, float* RESTRICT y, int64_t n)
{
    for (int64_t k = 0; k < n; k++) y[k] = npl_tanhf_rational(x[k]);
}

/* One LSTM forward step's gate math on pre-activations g [4H, B] (contiguous rows of B):
 * i, j, f, o = sigmoid(a_i), tanh(a_j), sigmoid(a_f), sigmoid(a_o) (stored back in g),
 * c = f * c_prev + i * j, h = o * tanh(c). */
static void lstm_forward_gates(float* RESTRICT g, const float* RESTRICT c_prev, float* RESTRICT c,
                               float* RESTRICT h, int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gi = g + k * B;
        float* RESTRICT gj = g + (H + k) * B;
        float* RESTRICT gf = g + (2 * H + k) * B;
        float* RESTRICT go = g + (3 * H + k) * B;
        const float* RESTRICT cp = c_prev + k * B;
        float* RESTRICT ck = c + k * B;
        float* RESTRICT hk = h + k * B;
        for (int64_t b = 0; b < B; b++) {
            float i = npl_sigmoidf_rational(gi[b]);
            float j = npl_tanhf_rational(gj[b]);
            float f = npl_sigmoidf_rational(gf[b]);
            float o = npl_sigmoidf_rational(go[b]);
            float cn = f * cp[b] + i * j;
            gi[b] = i; gj[b] = j; gf[b] = f; go[b] = o;
            ck[b] = cn;
            hk[b] = o * npl_tanhf_rational(cn);
        }
    }
}

/* Steps t0 .. t1-1 of the LSTM forward.  G [T, 4H, B]: the input projection (bias included) of
 * every step, overwritten with the gates; C [T+1, H, B], Hs [T+1, H, B] with C[t0], Hs[t0] set;
 * UT: the recurrent rows of the kernel transposed, [4H, H] with row stride ldut (a copy: OpenBLAS
 * runs this product 3-20 % quicker from an untransposed A; measured on C1-C3's shapes).
 *     G[t] += U^T h_t        [4H, H] @ [H, B]   (sgemm, beta = 1: onto the projection)
 *     gates, c_{t+1}, h_{t+1} from G[t], c_t */
void npl_lstm_forward_seq_f32(npl_sgemm_fn sgemm, const float* UT, int64_t ldut, float* G,
                              float* C, float* Hs, int64_t t0, int64_t t1, int64_t H, int64_t B)
{
    for (int64_t t = t0; t < t1; t++) {
        float* g = G + t * 4 * H * B;
        const float* h = Hs + t * H * B;
        sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, 4 * H, B, H, 1.0f, UT, ldut, h, B, 1.0f,
              g, B);
        lstm_forward_gates(g, C + t * H * B, C + (t + 1) * H * B, Hs + (t + 1) * H * B, H, B);
    }
}

/* A step's gate gradients, computed into the contiguous dgc [rows, B] (the sgemm reads it there:
 * 5-10 % quicker than from the gradient slab, whose rows are T*B apart), copied into the slab. */
static void scatter_rows(float* RESTRICT dst, int64_t ld, const float* RESTRICT src, int64_t rows,
                         int64_t B)
{
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * ld, src + r * B, (size_t)B * sizeof(float));
}

/* dh[k, b] += dout_t[b, k]: a step's output cotangent, time-major [B, P] (row stride ldo), added
 * to the feature-major carried gradient [P, B]. */
static void add_transposed(float* RESTRICT dh, const float* RESTRICT dout_t, int64_t ldo,
                           int64_t P, int64_t B)
{
    for (int64_t b = 0; b < B; b++) {
        const float* RESTRICT row = dout_t + b * ldo;
        for (int64_t k = 0; k < P; k++)
            dh[k * B + b] += row[k];
    }
}

/* The LSTM backward over all steps, t = T-1 .. 0.  G, C as the forward left them; dh [H, B] and
 * dc [H, B]: the final state's cotangents, overwritten with the initial state's; dout [T, B, H]
 * (row stride ldo; NULL: no output cotangent); dG: the gradient slab, step t at dG + t * ldstep,
 * rows lddg apart; dgc [4H, B] scratch (a step's gate gradients, contiguous).
 *     dm = dh + dout[t];  gate math (lstm_backward_rational) -> dG[t], dc;  dh = U dG[t]
 * DZ (or NULL): fold d inputs into the step's GEMM.  Then U is the whole kernel, [I+H, 4H] (the
 * x rows first), and step t writes [dx_t; dh_{t-1}] = U dG[t] into DZ + t (I+H) B: one GEMM with
 * I more rows instead of a separate all-steps GEMM for d inputs (quicker for narrow inputs). */
void npl_lstm_backward_seq_f32(npl_sgemm_fn sgemm, const float* U, int64_t ldu, const float* G,
                               const float* C, const float* dout, int64_t ldo, float* dh,
                               float* dc, float* dG, int64_t ldstep, int64_t lddg, float* dgc,
                               float* DZ, int64_t I, int64_t T, int64_t H, int64_t B)
{
    const int64_t Z = (I + H) * B;                      /* one step of DZ */
    for (int64_t t = T - 1; t >= 0; t--) {
        float* dcur = (DZ && t < T - 1) ? DZ + (t + 1) * Z + I * B : dh;   /* dL/dh_t so far */
        if (dout)
            add_transposed(dcur, dout + t * B * ldo, ldo, H, B);
        lstm_backward_rational(G + t * 4 * H * B, B, C + t * H * B, C + (t + 1) * H * B, dcur,
                               dc, dgc, B, H, B);
        if (DZ)
            sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, I + H, B, 4 * H, 1.0f, U, ldu, dgc, B,
                  0.0f, DZ + t * Z, B);
        else
            sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, H, B, 4 * H, 1.0f, U, ldu, dgc, B,
                  0.0f, dh, B);
        scatter_rows(dG + t * ldstep, lddg, dgc, 4 * H, B);
    }
    if (DZ)
        memcpy(dh, DZ + I * B, (size_t)(H * B) * sizeof(float));
}

/* The GRU step's gate math, as gru_gates_forward and gru_state_forward in npl/gates.py (g [3H, B]
 * contiguous rows): r, u = sigmoid(a_r), sigmoid(a_u) in place and rh = r * h_prev; then, after
 * the candidate's GEMM, c~ = tanh(a_c) in place and h = c~ + u * (h_prev - c~). */
static void gru_forward_gates(float* RESTRICT g, const float* RESTRICT h_prev, float* RESTRICT rh,
                              int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gr = g + k * B;
        float* RESTRICT gu = g + (H + k) * B;
        const float* RESTRICT hp = h_prev + k * B;
        float* RESTRICT rhk = rh + k * B;
        for (int64_t b = 0; b < B; b++) {
            float r = npl_sigmoidf_rational(gr[b]);
            gr[b] = r;
            gu[b] = npl_sigmoidf_rational(gu[b]);
            rhk[b] = r * hp[b];
        }
    }
}

static void gru_forward_state(float* RESTRICT g, const float* RESTRICT h_prev, float* RESTRICT h,
                              int64_t H, int64_t B)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gu = g + (H + k) * B;
        float* RESTRICT gc = g + (2 * H + k) * B;
        const float* RESTRICT hp = h_prev + k * B;
        float* RESTRICT hk = h + k * B;
        for (int64_t b = 0; b < B; b++) {
            float cand = npl_tanhf_rational(gc[b]);
            gc[b] = cand;
            hk[b] = cand + gu[b] * (hp[b] - cand);
        }
    }
}

/* Steps t0 .. t1-1 of the GRU forward.  G [T, 3H, B]: projections (a_r; a_u; a_c), bias included,
 * overwritten with (r; u; c~); Hs [T+1, H, B]; UgT [2H, H] (row stride ldugt) and UcT [H, H]
 * (lduct): the recurrent rows of the two kernels, transposed copies; rh [H, B] scratch.
 *     G[t][:2H] += Ug^T h_t;  r, u = sigmoid;  rh = r * h_t
 *     G[t][2H:] += Uc^T rh;   c~ = tanh;  h_{t+1} = u * h_t + (1 - u) * c~  */
void npl_gru_forward_seq_f32(npl_sgemm_fn sgemm, const float* UgT, int64_t ldugt,
                             const float* UcT, int64_t lduct, float* G, float* Hs, float* rh,
                             int64_t t0, int64_t t1, int64_t H, int64_t B)
{
    for (int64_t t = t0; t < t1; t++) {
        float* g = G + t * 3 * H * B;
        const float* h = Hs + t * H * B;
        float* hn = Hs + (t + 1) * H * B;
        sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, 2 * H, B, H, 1.0f, UgT, ldugt, h, B, 1.0f,
              g, B);
        gru_forward_gates(g, h, rh, H, B);
        sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, H, B, H, 1.0f, UcT, lduct, rh, B, 1.0f,
              g + 2 * H * B, B);
        gru_forward_state(g, h, hn, H, B);
    }
}

/* The GRU backward over all steps.  dh [H, B]: final-state cotangent, overwritten with the
 * initial state's; dprev [H, B] and drh [H, B] (with DZ: [I+H, B]) scratch; the rest as for the
 * LSTM.
 *     dh += dout[t];  u, c~ part (npl_gru_backward_f32) -> dG[t][H:], dprev = dh * u
 *     drh = Uc dG[t][2H:];  r part (npl_gru_reset_backward_f32) -> dG[t][:H], dprev += drh * r
 *     dh = dprev + Ug dG[t][:2H]   (sgemm, beta = 1)
 * With DZ, Ug and Uc are the whole kernels ([I+H, 2H], [I+H, H]) and step t leaves
 * [dx_t; dh_{t-1}] in DZ + t (I+H) B: the candidate GEMM gives [its part of dx_t; drh] in drh,
 * and the gates GEMM adds [its part; Ug dG[t][:2H]] onto [that part; dprev]. */
void npl_gru_backward_seq_f32(npl_sgemm_fn sgemm, const float* Ug, int64_t ldug, const float* Uc,
                              int64_t lduc, const float* G, const float* Hs, const float* dout,
                              int64_t ldo, float* dh, float* dprev, float* drh, float* dG,
                              int64_t ldstep, int64_t lddg, float* dgc, float* DZ, int64_t I,
                              int64_t T, int64_t H, int64_t B)
{
    const int64_t Z = (I + H) * B;
    for (int64_t t = T - 1; t >= 0; t--) {
        float* dcur = (DZ && t < T - 1) ? DZ + (t + 1) * Z + I * B : dh;
        if (dout)
            add_transposed(dcur, dout + t * B * ldo, ldo, H, B);
        const float* g = G + t * 3 * H * B;
        const float* h = Hs + t * H * B;
        npl_gru_backward_f32(g, B, h, dcur, dgc, B, dprev, H, B);
        const int64_t rows = DZ ? I + H : H;
        sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, rows, B, H, 1.0f, Uc, lduc,
              dgc + 2 * H * B, B, 0.0f, drh, B);
        const float* d_rh = DZ ? drh + I * B : drh;
        npl_gru_reset_backward_f32(g, B, h, d_rh, dprev, dgc, B, H, B);
        if (DZ) {
            float* z = DZ + t * Z;
            memcpy(z, drh, (size_t)(I * B) * sizeof(float));
            memcpy(z + I * B, dprev, (size_t)(H * B) * sizeof(float));
            sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, I + H, B, 2 * H, 1.0f, Ug, ldug, dgc,
                  B, 1.0f, z, B);
        } else {
            sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, H, B, 2 * H, 1.0f, Ug, ldug, dgc, B,
                  1.0f, dprev, B);
            memcpy(dh, dprev, (size_t)(H * B) * sizeof(float));
        }
        scatter_rows(dG + t * ldstep, lddg, dgc, 3 * H, B);
    }
    if (DZ)
        memcpy(dh, DZ + I * B, (size_t)(H * B) * sizeof(float));
}
