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
 * on a packed-weight kernel (AVX-512 or AVX2; elsewhere NumPy's own sgemm) and a rational tanh as
 * fast as NumPy's, so no Python runs between steps (C1 LSTM forward+backward 28.3 -> 26.0 ms, C4
 * 1.47 -> 1.03 ms, one thread, with sgemm).
 *
 * Layout (npl's feature-major one): a step's gates are rows of B contiguous floats, gate block q
 * holds unit k in row q*H + k; row r of g starts at g + r*ldg (the backward's gradient slab has a
 * row stride of T*B).  States c_prev, c, dm, dc, h_prev, dh, ... are contiguous [H, B].  The inner
 * loop runs over the batch column b, so the compiler vectorises it; tanh is computed by npl_tanhf
 * below (branch-free, so it vectorises too) instead of libm's scalar tanhf.
 */
#define _GNU_SOURCE               /* clock_gettime, pthreads, gettid under -std=c99 */
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
    n = n == n ? n : 0.0f;                             /* NaN in: p is NaN, and (int)NaN is UB */
    int32_t bits = ((int32_t)n + 127) << 23;          /* 2^n, n in [-127, 127] */
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
 * denominator, the minimax form TensorFlow's CPU kernels evaluate through Eigen), its value at
 * +-7.905 (0.99999976) from there to +-9.0109, and exactly +-1 beyond (where float32's tanh
 * rounds to +-1, so that a saturated gate's derivative 1 - y^2 is exactly 0, not 4.8e-7: large
 * inputs or weights would otherwise leak gradient through it), x itself for |x| < 4e-4.  ~0.4 ns
 * per value vectorised against npl_tanhf's 1.2; within 4e-7 of tanh (tested against float64). */
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
    const float ax = __builtin_fabsf(x);
    y = ax >= 9.0109f ? __builtin_copysignf(1.0f, x) : y;
    return ax < 4e-4f ? x : y;
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
 * clip_mask (or NULL): the cell clip passed the gradient where it is 1.  The states' rows are lds
 * apart (B for the step kernels; the sequence loops' batch slices use the whole batch's stride).
 * len (or NULL): each column's sequence length; at step tf a column with len <= tf is past its
 * end, where TensorFlow carries the state unchanged: its gate gradients are 0 and dc passes
 * through (selects, so the loop still vectorises).  `rational`: recompute
 * tanh(c) with the rational tanh, as the C loops' forward computed it (a constant at each call
 * site, so each caller gets its own vectorised copy). */
static inline __attribute__((always_inline)) void
lstm_backward_body(const float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                   const float* RESTRICT c, const float* RESTRICT dm, float* RESTRICT dc,
                   float* RESTRICT dg, int64_t lddg, const float* w_i, const float* w_f,
                   const float* w_o, const uint8_t* RESTRICT clip_mask, int64_t H, int64_t B,
                   int64_t lds, const int rational, const float* RESTRICT len, float tf)
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
        const float* RESTRICT cp = c_prev + k * lds;
        const float* RESTRICT ck = c + k * lds;
        const float* RESTRICT dmk = dm + k * lds;
        float* RESTRICT dck = dc + k * lds;
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
            float dcp = dct * f + dg_i * pi + dg_f * pf;
            if (len) {
                const int live = tf < len[b];
                dg_i = live ? dg_i : 0.0f; dg_j = live ? dg_j : 0.0f;
                dg_f = live ? dg_f : 0.0f; dg_o = live ? dg_o : 0.0f;
                dcp = live ? dcp : dck[b];
            }
            dgi[b] = dg_i; dgj[b] = dg_j; dgf[b] = dg_f; dgo[b] = dg_o;
            dck[b] = dcp;
        }
    }
}

void npl_lstm_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT c_prev,
                           const float* RESTRICT c, const float* RESTRICT dm, float* RESTRICT dc,
                           float* RESTRICT dg, int64_t lddg,
                           const float* w_i, const float* w_f, const float* w_o,
                           const uint8_t* RESTRICT clip_mask, int64_t H, int64_t B)
{
    lstm_backward_body(g, ldg, c_prev, c, dm, dc, dg, lddg, w_i, w_f, w_o, clip_mask, H, B, B,
                       0, 0, 0.0f);
}

/* The same for the C loops (plain cells), with the forward's rational tanh of c; every row of
 * every array is ld apart; len: as above (a separate copy of the loop without it). */
static void lstm_backward_rational(const float* RESTRICT g, const float* RESTRICT c_prev,
                                   const float* RESTRICT c, const float* RESTRICT dm,
                                   float* RESTRICT dc, float* RESTRICT dg, int64_t H, int64_t B,
                                   int64_t ld, const float* RESTRICT len, float tf)
{
    if (len)
        lstm_backward_body(g, ld, c_prev, c, dm, dc, dg, ld, 0, 0, 0, 0, H, B, ld, 1, len, tf);
    else
        lstm_backward_body(g, ld, c_prev, c, dm, dc, dg, ld, 0, 0, 0, 0, H, B, ld, 1, 0, 0.0f);
}

/* gru_backward_pointwise: dg[H:2H] = dL/da_u, dg[2H:] = dL/da_c, dh_prev = dh * u (the states'
 * rows lds apart).  len (or NULL): a column past its length (len <= tf) gets zero gate gradients
 * and passes dh through unchanged (the reset part then adds zeros). */
static inline __attribute__((always_inline)) void
gru_backward_body(const float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                  const float* RESTRICT dh, float* RESTRICT dg, int64_t lddg,
                  float* RESTRICT dh_prev, int64_t H, int64_t B, int64_t lds,
                  const float* RESTRICT len, float tf)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gu = g + (H + k) * ldg;
        const float* RESTRICT gc = g + (2 * H + k) * ldg;
        float* RESTRICT dgu = dg + (H + k) * lddg;
        float* RESTRICT dgc = dg + (2 * H + k) * lddg;
        const float* RESTRICT hp = h_prev + k * lds;
        const float* RESTRICT dhk = dh + k * lds;
        float* RESTRICT dhp = dh_prev + k * lds;
        for (int64_t b = 0; b < B; b++) {
            float u = gu[b], cand = gc[b], d = dhk[b];
            float d_u = d * (hp[b] - cand) * u * (1.0f - u);
            float d_c = d * (1.0f - u) * (1.0f - cand * cand);
            float d_h = d * u;
            if (len) {
                const int live = tf < len[b];
                d_u = live ? d_u : 0.0f; d_c = live ? d_c : 0.0f; d_h = live ? d_h : d;
            }
            dgu[b] = d_u;
            dgc[b] = d_c;
            dhp[b] = d_h;
        }
    }
}

void npl_gru_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                          const float* RESTRICT dh, float* RESTRICT dg, int64_t lddg,
                          float* RESTRICT dh_prev, int64_t H, int64_t B)
{
    gru_backward_body(g, ldg, h_prev, dh, dg, lddg, dh_prev, H, B, B, 0, 0.0f);
}

/* gru_reset_backward: dg[:H] = drh * h_prev * r (1 - r); dh_prev += drh * r. */
static inline void gru_reset_backward_body(const float* RESTRICT g, int64_t ldg,
                                           const float* RESTRICT h_prev, const float* RESTRICT drh,
                                           float* RESTRICT dh_prev, float* RESTRICT dg,
                                           int64_t lddg, int64_t H, int64_t B, int64_t lds)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gr = g + k * ldg;
        float* RESTRICT dgr = dg + k * lddg;
        const float* RESTRICT hp = h_prev + k * lds;
        const float* RESTRICT d = drh + k * lds;
        float* RESTRICT dhp = dh_prev + k * lds;
        for (int64_t b = 0; b < B; b++) {
            float r = gr[b];
            dgr[b] = d[b] * hp[b] * r * (1.0f - r);
            dhp[b] += d[b] * r;
        }
    }
}

void npl_gru_reset_backward_f32(const float* RESTRICT g, int64_t ldg, const float* RESTRICT h_prev,
                                const float* RESTRICT drh, float* RESTRICT dh_prev,
                                float* RESTRICT dg, int64_t lddg, int64_t H, int64_t B)
{
    gru_reset_backward_body(g, ldg, h_prev, drh, dh_prev, dg, lddg, H, B, B);
}

/* ================================================================== whole-sequence loops
 * The sequence passes of npl/cells.py for the common case (tanh activations, no peepholes, cell
 * clip, projection or state dropout; with or without sequence lengths, where a column past its
 * length carries its state, as TensorFlow's dynamic_rnn does) with the time loop in C: per step
 * the recurrent product (rgemm: the packed kernel below where it is built, else one call of the
 * BLAS's sgemm) and one pass of gate math, no Python between steps.  The sgemm is the one NumPy
 * itself uses: npl/kernels/cpu.py finds cblas_sgemm in the OpenBLAS that NumPy loaded and passes
 * its address (`sgemm` below), after checking it on a small product against numpy.matmul; where
 * it finds none, the Python loop runs.  Same slabs, same
 * layout and the same formulas as the Python loop (and as npl/gates.py, which tests compare
 * against); the forward's tanh is the rational one below instead of NumPy's, so the two paths
 * agree to a few float32 ulps, not bit for bit.
 *
 * Threads: the rows of a batch never meet in an RNN's time loop (each column b of every slab is
 * its own sequence; only the weight gradients sum over b, and they are computed after the loop),
 * so with nthreads > 1 each thread runs the whole loop on its own slice of batch columns, with
 * no synchronisation between steps, on the packed weights (shared, read-only) or calling a
 * single-threaded sgemm (cpu.py sets the BLAS to one thread around the call).  Slices are
 * multiples of 16 columns (64 bytes), so no two threads write one cache line.  Inside the loops every row is `ld` floats apart (the whole batch) while
 * `B` is the slice's width.
 *
 * The integer arguments are passed as int64: on x86-64 (the only place cpu.py enables this) an
 * LP64 cblas_sgemm reads the low 32 bits of the same registers and stack slots, an ILP64 one all
 * 64, so either interface receives the right values. */
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef void (*npl_sgemm_fn)(int64_t order, int64_t transa, int64_t transb, int64_t m, int64_t n,
                             int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                             int64_t ldb, float beta, float* c, int64_t ldc);
enum { NPL_ROW_MAJOR = 101, NPL_NO_TRANS = 111, NPL_TRANS = 112 };
#define NPL_MAX_THREADS 64

/* ------------------------------------------------------------------ the recurrent GEMM
 * Every step of a pass multiplies the same weights: C [M, N] = A [M, K] @ X [K, N] + beta C, with
 * A one of the recurrent weights (constant during the pass) and X the step's state or gate
 * gradients [K, N] (N: the batch slice, contiguous).  A BLAS copies ("packs") both operands into
 * its own blocked layout on every call; for A, T times the same copy (measured: OpenBLAS's copy
 * routines took 9.5 % of the C2 GRU forward+backward, one thread).  So where the compiler targets
 * AVX-512 or AVX2 with FMA, the pass packs each weight once (npl_pack_a) and every step runs the
 * register-blocked kernel below on it; elsewhere, and when switched off (npl_set_packed_gemm), the
 * steps call the BLAS's sgemm.
 *
 * Packed layout: panels of NPL_MR rows, Ap[p][k][r] = A[p*MR + r, k] (rows past M are 0), so the
 * kernel reads one panel front to back.  A tile of C, MR rows x NV vectors of VL columns, stays
 * in registers over the whole K loop:
 *     for k:  x_v = X[k, n0 + v*VL : ...]          (NV vector loads; the last one masked)
 *             acc[r][v] += A[m0 + r, k] * x_v      (MR broadcasts, MR*NV fused multiply-adds)
 * then C = acc (+ C when beta = 1).  Each C element is one k-ordered sum of fused multiply-adds,
 * the same whatever the slice or tile it falls in, so the threaded and one-thread passes agree
 * bit for bit.  With AVX-512 a tile is 6 x 64 (24 accumulators); with AVX2 6 x 16 (12).  On this
 * project's machine (Zen 4, one thread) the AVX-512 kernel ran the C1-C3 step shapes at
 * 111-116 GFLOP/s against OpenBLAS's 92-102. */
#define NPL_MR 6
#if defined(__AVX512F__)
#include <immintrin.h>
#define NPL_VL 16
#define NPL_NV 4
typedef __m512 npl_vec;
typedef __mmask16 npl_mask;
#define NPL_MASK(n) ((__mmask16)((1u << (n)) - 1u))
#define NPL_ZERO() _mm512_setzero_ps()
#define NPL_LOAD(p) _mm512_loadu_ps(p)
#define NPL_MLOAD(m, p) _mm512_maskz_loadu_ps((m), (p))
#define NPL_MSTORE(p, m, x) _mm512_mask_storeu_ps((p), (m), (x))
#define NPL_STORE(p, x) _mm512_storeu_ps((p), (x))
#define NPL_BCAST(s) _mm512_set1_ps(s)
#define NPL_STREAM(p, x) _mm512_stream_ps((p), (x))
#define NPL_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define NPL_ADD(a, b) _mm512_add_ps((a), (b))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NPL_VL 8
#define NPL_NV 2
typedef __m256 npl_vec;
typedef __m256i npl_mask;
#define NPL_MASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define NPL_ZERO() _mm256_setzero_ps()
#define NPL_LOAD(p) _mm256_loadu_ps(p)
#define NPL_MLOAD(m, p) _mm256_maskload_ps((p), (m))
#define NPL_MSTORE(p, m, x) _mm256_maskstore_ps((p), (m), (x))
#define NPL_STORE(p, x) _mm256_storeu_ps((p), (x))
#define NPL_BCAST(s) _mm256_set1_ps(s)
#define NPL_STREAM(p, x) _mm256_stream_ps((p), (x))
#define NPL_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define NPL_ADD(a, b) _mm256_add_ps((a), (b))
#endif

static int npl_packed_on = 1;

/* The packed kernel's vector width in floats (16: AVX-512, 8: AVX2), 0 where it is not built;
 * npl_set_packed_gemm(0) makes the passes call the BLAS instead (for tests and measurements). */
int64_t npl_packed_gemm_width(void)
{
#ifdef NPL_VL
    return NPL_VL;
#else
    return 0;
#endif
}

void npl_set_packed_gemm(int64_t on) { npl_packed_on = on != 0; }
int64_t npl_packed_gemm_enabled(void) { return npl_packed_gemm_width() > 0 && npl_packed_on; }

/* A recurrent weight as the loops see it: the matrix (row stride lda), and its packed copy or
 * NULL (then each step calls sgemm).  `own`: the pass packed it (and frees it); otherwise the
 * caller packed it once for several calls (npl_pack_f32) and a may be NULL. */
typedef struct {
    npl_sgemm_fn sgemm;
    const float* a;
    int64_t lda;
    float* packed;
    int own;
    float* at;          /* A^T [K, M] for narrow slices (npl_narrow_a; row stride atld), or NULL */
    int64_t atld;
    const float* ta;    /* or A given as A^T [K, M] in place (row stride tald): a forward's U */
    int64_t tald;
    float* abuf;        /* A made from ta for a pass that is not narrow (freed after it) */
} npl_weight;

#ifdef NPL_VL
/* One MR x (nv VL) tile.  Row r of A is read at a + r*rs, its element k at k*ks further: packed
 * panels (rs = 1, ks = MR; rows past M are the panel's zeros) or a plain row-major A (rs = lda,
 * ks = 1; `clamp`: rows past `rows` read the last real row, and their sums are dropped). */
static inline __attribute__((always_inline)) void
gemm_tile(const int nv, npl_mask last, int64_t K, const float* RESTRICT a, int64_t rs,
          const int64_t ks, const int clamp, const float* RESTRICT x, int64_t ldx,
          float* RESTRICT c, int64_t ldc, int beta, int rows)
{
    const float* ar[NPL_MR];
#pragma GCC unroll 8
    for (int r = 0; r < NPL_MR; r++) ar[r] = a + (clamp && r >= rows ? rows - 1 : r) * rs;
    npl_vec acc[NPL_MR][NPL_NV];
#pragma GCC unroll 8
    for (int r = 0; r < NPL_MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v] = NPL_ZERO();
    for (int64_t k = 0; k < K; k++) {
        npl_vec xv[NPL_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            xv[v] = v == nv - 1 ? NPL_MLOAD(last, x + k * ldx + v * NPL_VL)
                                : NPL_LOAD(x + k * ldx + v * NPL_VL);
#pragma GCC unroll 8
        for (int r = 0; r < NPL_MR; r++) {
            const npl_vec av = NPL_BCAST(ar[r][k * ks]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = NPL_FMA(av, xv[v], acc[r][v]);
        }
    }
    const npl_mask full = NPL_MASK(NPL_VL);
#pragma GCC unroll 8
    for (int r = 0; r < NPL_MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            if (r >= rows) break;              /* unrolled with constant r: acc stays in registers */
            float* cp = c + r * ldc + v * NPL_VL;
            const npl_mask m = v == nv - 1 ? last : full;
            NPL_MSTORE(cp, m, beta ? NPL_ADD(acc[r][v], NPL_MLOAD(m, cp)) : acc[r][v]);
        }
}

/* C [M, N] (row stride ldc) = A X + beta C (beta 0 or 1): A packed by npl_pack (lda = 0), or
 * a plain row-major A with row stride lda (for an A used once, not worth packing). */
static inline __attribute__((always_inline)) void
tiles(const float* RESTRICT A, int64_t lda, int64_t M, int64_t N, int64_t K,
      const float* RESTRICT X, int64_t ldx, float beta, float* RESTRICT C, int64_t ldc,
      const int packed)
{
    const int64_t W = NPL_NV * NPL_VL;
    const int bt = beta != 0.0f;
    for (int64_t n0 = 0; n0 < N; n0 += W) {
        const int64_t cols = N - n0 < W ? N - n0 : W;
        const int nv = (int)((cols + NPL_VL - 1) / NPL_VL);
        const npl_mask last = NPL_MASK((int)(cols - (int64_t)(nv - 1) * NPL_VL));
        for (int64_t m0 = 0; m0 < M; m0 += NPL_MR) {
            const int rows = M - m0 < NPL_MR ? (int)(M - m0) : NPL_MR;
            const float* a = packed ? A + m0 * K : A + m0 * lda;
            const int64_t rs = packed ? 1 : lda, ks = packed ? NPL_MR : 1;
            float* c = C + m0 * ldc + n0;
            const float* x = X + n0;
            switch (nv) {
#if NPL_NV == 4
            case 4: gemm_tile(4, last, K, a, rs, ks, !packed, x, ldx, c, ldc, bt, rows); break;
            case 3: gemm_tile(3, last, K, a, rs, ks, !packed, x, ldx, c, ldc, bt, rows); break;
#endif
            case 2: gemm_tile(2, last, K, a, rs, ks, !packed, x, ldx, c, ldc, bt, rows); break;
            default: gemm_tile(1, last, K, a, rs, ks, !packed, x, ldx, c, ldc, bt, rows); break;
            }
        }
    }
}

static void packed_gemm(const float* RESTRICT Ap, int64_t M, int64_t N, int64_t K,
                        const float* RESTRICT X, int64_t ldx, float beta, float* RESTRICT C,
                        int64_t ldc)
{
    tiles(Ap, 0, M, N, K, X, ldx, beta, C, ldc, 1);
}

static void direct_gemm(const float* RESTRICT A, int64_t lda, int64_t M, int64_t N, int64_t K,
                        const float* RESTRICT X, int64_t ldx, float beta, float* RESTRICT C,
                        int64_t ldc)
{
    tiles(A, lda, M, N, K, X, ldx, beta, C, ldc, 0);
}

/* ------------------------------------------------------------------ narrow products
 * The tile above puts the batch columns in its vector lanes, so a slice of N < VL columns fills
 * N of them (batch 1: one lane in 16).  For slices of at most npl_narrow_max columns the product
 * runs on A^T [K, M] instead (At, rows atld floats apart), vectors along M and the columns
 * broadcast, in blocks of nv vectors x nb columns of accumulators:
 *     for k:  a_v = At[k, m0 + v*VL : ...]          (nv vector loads; the last one masked)
 *             acc[v][b] += a_v * X[k, b]            (nb broadcasts, nv*nb FMAs)
 * then C[m0 + v*VL + i, b] = acc[v][b][i] (+ C).  Every C element is the same k-ordered chain of
 * fused multiply-adds from zero as in gemm_tile, so the two kernels give identical bits and the
 * slice width never changes a result.  Each accumulator is a chain of dependent FMAs, so a block
 * needs enough of them to cover the FMA latency: up to 2 columns a block is NPL_NARROW_NV_WIDE
 * vectors tall (8 with AVX-512: 4 vectors of one column left a C5-sized product latency-bound),
 * up to NPL_NARROW_COLS columns NPL_NV.  A^T is made once per pass (from the packed panels or
 * the matrix).  The narrow form runs at about the same rate whatever N (one Zen 4 core, the
 * [512, 128] and [1024, 256] step products: 71-107 GFLOP/s for 2-32 columns), the tile at the
 * fraction of its last vector's lanes filled (115 GFLOP/s at 16 columns, 77 at 12, 26 at 4, 66
 * at 20).  So a product takes the narrow form when the columns past its whole vectors are at
 * most npl_narrow_max, 3/4 of a vector by default (N = 1-12 and 17-28 with AVX-512; AVX2: 1-6,
 * 9-14, 17-22, 25-30), under 32 columns (wider batches are sliced in multiples of 16 for the
 * threads).  Measured in the loops (one thread, LSTM forward+backward, T = 20, I = 128, H = 256,
 * ms, narrow / tile): batch 14 10.10 / 10.22, batch 16 (all tile) 10.2, batch 20 13.31 / 16.51,
 * batch 24 15.57 / 16.74, batch 28 18.02 / 17.64. */
#if NPL_NV == 4
#define NPL_NARROW_COLS 6
#define NPL_NARROW_NV_WIDE 8
#else                                   /* AVX2: 16 registers; 2 x 6 accumulators spilled */
#define NPL_NARROW_COLS 4
#define NPL_NARROW_NV_WIDE 4
#endif
/* The accumulators of the biggest block, acc[v * nb + b] in narrow_tile (gcc keeps them in
 * registers only where every index is a constant after unrolling; see narrow_tile's stores). */
#define NPL_NARROW_ACC (NPL_NARROW_NV_WIDE * 2 > NPL_NV * NPL_NARROW_COLS ? NPL_NARROW_NV_WIDE * 2 \
                                                                      : NPL_NV * NPL_NARROW_COLS)
static int64_t npl_narrow_max = 3 * NPL_VL / 4;

/* Whether a slice or product of N columns runs on the narrow form (one thread): fewer than 32,
 * and at most npl_narrow_max past whole vectors (npl/cells.py asks npl_narrow_batch). */
static int npl_narrow_cols(int64_t N)
{
    return N < 32 && N % NPL_VL != 0 && N % NPL_VL <= npl_narrow_max;
}

static inline __attribute__((always_inline)) void
narrow_tile(const int nv, const int nb, npl_mask last, int rows, int64_t K,
            const float* RESTRICT at, int64_t atld, const float* RESTRICT x, int64_t ldx,
            float* RESTRICT c, int64_t ldc, int beta)
{
    npl_vec acc[NPL_NARROW_ACC];         /* acc[v * nb + b]: no larger than the biggest block */
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++)
#pragma GCC unroll 6
        for (int b = 0; b < nb; b++) acc[v * nb + b] = NPL_ZERO();
    for (int64_t k = 0; k < K; k++) {
        const float* RESTRICT ak = at + k * atld;
        const float* RESTRICT xk = x + k * ldx;
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            const npl_vec av = v == nv - 1 ? NPL_MLOAD(last, ak + v * NPL_VL) : NPL_LOAD(ak + v * NPL_VL);
#pragma GCC unroll 6
            for (int b = 0; b < nb; b++) acc[v * nb + b] = NPL_FMA(NPL_BCAST(xk[b]), av, acc[v * nb + b]);
        }
    }
    /* All accumulators to memory first, in a loop with no inner loop (so that it unrolls and
     * acc is only ever indexed by constants: with the scatter below in the same loop, gcc kept
     * acc in memory, spilling it in the k loop, and every block ran at 35 GFLOP/s). */
    float tmp[NPL_NARROW_ACC * NPL_VL] __attribute__((aligned(64)));
#pragma GCC unroll 24
    for (int q = 0; q < nv * nb; q++) NPL_STORE(tmp + q * NPL_VL, acc[q]);
    for (int v = 0; v < nv; v++) {
        const int n = rows - v * NPL_VL < NPL_VL ? rows - v * NPL_VL : NPL_VL;
        for (int b = 0; b < nb; b++) {
            const float* RESTRICT t = tmp + (v * nb + b) * NPL_VL;
            float* RESTRICT cp = c + (int64_t)v * NPL_VL * ldc + b;
            if (beta)
                for (int i = 0; i < n; i++) cp[i * ldc] = t[i] + cp[i * ldc];
            else
                for (int i = 0; i < n; i++) cp[i * ldc] = t[i];
        }
    }
}

#define NPL_NARROW_CALL(NV, NB) narrow_tile(NV, NB, last, rows, K, at, atld, x, ldx, c, ldc, bt)

/* One block of nb <= 2 columns and nv <= NPL_NARROW_NV_WIDE vectors, or of nb <= 6 columns and
 * nv <= NPL_NV vectors, with constant shapes (the accumulators stay in registers). */
static void narrow_block(int nv, int nb, npl_mask last, int rows, int64_t K,
                         const float* RESTRICT at, int64_t atld, const float* RESTRICT x,
                         int64_t ldx, float* RESTRICT c, int64_t ldc, int bt)
{
    if (nb <= 2) {
#define NPL_NB12(NV) if (nb == 1) NPL_NARROW_CALL(NV, 1); else NPL_NARROW_CALL(NV, 2); break;
        switch (nv) {
#if NPL_NARROW_NV_WIDE == 8
        case 8: NPL_NB12(8)
        case 7: NPL_NB12(7)
        case 6: NPL_NB12(6)
        case 5: NPL_NB12(5)
#endif
        case 4: NPL_NB12(4)
        case 3: NPL_NB12(3)
        case 2: NPL_NB12(2)
        default: NPL_NB12(1)
        }
#undef NPL_NB12
        return;
    }
#define NPL_NB36(NV)                                                                          \
    switch (nb) {                                                                            \
    case 3: NPL_NARROW_CALL(NV, 3); break;                                                   \
    NPL_NB56(NV)                                                                             \
    default: NPL_NARROW_CALL(NV, 4); break;                                                  \
    }                                                                                        \
    break;
#if NPL_NARROW_COLS == 6
#define NPL_NB56(NV) case 5: NPL_NARROW_CALL(NV, 5); break; case 6: NPL_NARROW_CALL(NV, 6); break;
#else
#define NPL_NB56(NV)
#endif
    switch (nv) {
#if NPL_NV == 4
    case 4: NPL_NB36(4)
    case 3: NPL_NB36(3)
#endif
    case 2: NPL_NB36(2)
    default: NPL_NB36(1)
    }
#undef NPL_NB36
#undef NPL_NB56
}

/* C [M, N] (row stride ldc) = A X + beta C (beta 0 or 1), from At = A^T [K, M'] (M <= M': a
 * prefix of A's rows; row stride atld), for narrow N. */
static void narrow_gemm(const float* RESTRICT At, int64_t atld, int64_t M, int64_t N, int64_t K,
                        const float* RESTRICT X, int64_t ldx, float beta, float* RESTRICT C,
                        int64_t ldc)
{
    const int bt = beta != 0.0f;
    for (int64_t b0 = 0; b0 < N; b0 += NPL_NARROW_COLS) {
        const int nb = (int)(N - b0 < NPL_NARROW_COLS ? N - b0 : NPL_NARROW_COLS);
        const int64_t W = (nb <= 2 ? NPL_NARROW_NV_WIDE : NPL_NV) * NPL_VL;
        for (int64_t m0 = 0; m0 < M; m0 += W) {
            const int rows = (int)(M - m0 < W ? M - m0 : W);
            const int nv = (rows + NPL_VL - 1) / NPL_VL;
            narrow_block(nv, nb, NPL_MASK(rows - (nv - 1) * NPL_VL), rows, K, At + m0, atld,
                         X + b0, ldx, C + m0 * ldc + b0, ldc, bt);
        }
    }
}

/* The row stride of A^T for M rows of A: whole cache lines plus one, so that the K loop, which
 * reads a block of each row of A^T, does not meet the same L1 sets row after row (with a stride
 * of 1024 floats, H = 256's LSTM, the narrow product took 24 us a step against 6 us padded). */
static int64_t npl_narrow_ld(int64_t M) { return (M + 15) / 16 * 16 + 16; }

/* A^T [K, M] (row stride npl_narrow_ld(M), 64-byte aligned) from A's packed panels, or NULL (no
 * memory). */
static float* npl_unpack_t(const float* RESTRICT Ap, int64_t M, int64_t K)
{
    void* buf = NULL;
    const int64_t ld = npl_narrow_ld(M);
    if (posix_memalign(&buf, 64, (size_t)(ld * K) * sizeof(float)) != 0)
        return NULL;
    float* RESTRICT at = (float*)buf;
    for (int64_t p = 0; p * NPL_MR < M; p++) {
        const int rows = M - p * NPL_MR < NPL_MR ? (int)(M - p * NPL_MR) : NPL_MR;
        const float* RESTRICT src = Ap + p * K * NPL_MR;
        for (int64_t k = 0; k < K; k++)
            for (int r = 0; r < rows; r++) at[k * ld + p * NPL_MR + r] = src[k * NPL_MR + r];
    }
    return at;
}
#endif

void npl_transpose_f32(const float* RESTRICT src, int64_t ss, int64_t lds, float* RESTRICT dst,
                       int64_t sd, int64_t ldd, int64_t n, int64_t R, int64_t C);

/* Whether a pass of a batch of N columns (one slice) runs on the narrow form: the rule the C
 * loops apply, for npl/cells.py to choose the weight's form by. */
int64_t npl_narrow_batch(int64_t N)
{
#ifdef NPL_VL
    return npl_packed_gemm_enabled() && npl_narrow_cols(N);
#else
    (void)N;
    return 0;
#endif
}

/* The widest slice that runs on the narrow kernel (0: never); returns the value in force. */
int64_t npl_set_narrow_max(int64_t n)
{
#ifdef NPL_VL
    if (n >= 0)
        npl_narrow_max = n;
    return npl_narrow_max;
#else
    (void)n;
    return 0;
#endif
}

/* Floats of A [M, K] packed: whole panels of NPL_MR rows. */
static int64_t npl_packed_len(int64_t M, int64_t K)
{
    return (M + NPL_MR - 1) / NPL_MR * NPL_MR * K;
}

/* A [M, K] (element (m, k) at a[m * sam + k * sak]) packed into Ap (npl_packed_len floats).  The
 * loop runs over k outside the panel's rows, so a transposed A (sam = 1) is read MR floats at a
 * time and the panel is written front to back. */
static void npl_pack_into(const float* RESTRICT a, int64_t sam, int64_t sak, int64_t M, int64_t K,
                          float* RESTRICT Ap)
{
    const int64_t panels = (M + NPL_MR - 1) / NPL_MR;
    for (int64_t p = 0; p < panels; p++) {
        const int rows = M - p * NPL_MR < NPL_MR ? (int)(M - p * NPL_MR) : NPL_MR;
        const float* RESTRICT ap = a + p * NPL_MR * sam;
        float* RESTRICT dst = Ap + p * K * NPL_MR;
        for (int64_t k = 0; k < K; k++)
            for (int r = 0; r < NPL_MR; r++)
                dst[k * NPL_MR + r] = r < rows ? ap[r * sam + k * sak] : 0.0f;
    }
}

/* A [M, K] packed into a new buffer, or NULL (kernel not built or switched off, or no memory). */
static float* npl_pack(const float* a, int64_t sam, int64_t sak, int64_t M, int64_t K)
{
#ifdef NPL_VL
    if (!npl_packed_on || M <= 0 || K <= 0)
        return NULL;
    void* buf = NULL;
    if (posix_memalign(&buf, 64, (size_t)npl_packed_len(M, K) * sizeof(float)) != 0)
        return NULL;
    npl_pack_into(a, sam, sak, M, K, (float*)buf);
    return (float*)buf;
#else
    (void)a; (void)sam; (void)sak; (void)M; (void)K;
    return NULL;
#endif
}

/* The entry points for a weight packed once and used by several calls of the loops (the forward
 * runs its steps a chunk of steps per call): the floats the packed copy of A [M, K] takes, 0
 * where the kernel is not built or is switched off (then the loops take the plain matrix); and
 * the packing into out (n floats), element (m, k) of A at a[m * sam + k * sak] (any strides: the
 * loops' forward packs U^T straight from the kernel's rows).  Returns 1, 0 where the kernel is
 * not built or switched off, -1 where out is too small or the shape is empty (out not written). */
int64_t npl_packed_floats(int64_t M, int64_t K)
{
    return npl_packed_gemm_enabled() && M > 0 && K > 0 ? npl_packed_len(M, K) : 0;
}

int64_t npl_pack_f32(const float* a, int64_t sam, int64_t sak, int64_t M, int64_t K, float* out,
                     int64_t n)
{
    if (!npl_packed_gemm_enabled())
        return 0;
    if (M <= 0 || K <= 0 || n < npl_packed_len(M, K))
        return -1;
    npl_pack_into(a, sam, sak, M, K, out);
    return 1;
}

/* w->at = A^T [K, M] for a pass of narrow slices (narrow_gemm), from the packed panels or the
 * matrix; left NULL where there is no memory (the steps then run on the packed or plain A). */
#ifdef NPL_VL
static void npl_narrow_a(npl_weight* w, int64_t M, int64_t K)
{
    void* buf = NULL;
    w->atld = npl_narrow_ld(M);
    if (w->packed) {
        w->at = npl_unpack_t(w->packed, M, K);
    } else if ((w->a || w->ta)
               && posix_memalign(&buf, 64, (size_t)(w->atld * K) * sizeof(float)) == 0) {
        float* at = (float*)buf;
        if (w->ta)                                      /* rows of A^T: a padded copy */
            for (int64_t k = 0; k < K; k++)
                memcpy(at + k * w->atld, w->ta + k * w->tald, (size_t)M * sizeof(float));
        else
            npl_transpose_f32(w->a, 0, w->lda, at, 0, w->atld, 1, M, K);
        w->at = at;
    }
}
#endif

/* A weight given as A^T (ta) for a pass that runs on the tile or on sgemm: A [M, K] made from it
 * (w->a, w->abuf).  Returns 0, or -1 where there is no memory. */
static int npl_a_from_t(npl_weight* w, int64_t M, int64_t K)
{
    void* buf = NULL;
    if (!w->ta || w->a || w->packed)
        return 0;
    if (posix_memalign(&buf, 64, (size_t)(M * K) * sizeof(float)) != 0)
        return -1;
    npl_transpose_f32(w->ta, 0, w->tald, (float*)buf, 0, K, 1, K, M);
    w->a = w->abuf = (float*)buf;
    w->lda = K;
    return 0;
}

/* Packs w->a [M, K] (w->packed; NULL where the steps will call sgemm), unless the caller packed
 * it already. */
static void npl_pack_a(npl_weight* w, int64_t M, int64_t K)
{
    if (w->packed)
        return;
    w->packed = npl_pack(w->a, w->lda, 1, M, K);
    w->own = 1;
}

/* One step's product: C [M, N] = A X + beta C. */
static void rgemm(const npl_weight* w, int64_t M, int64_t N, int64_t K, const float* X,
                  int64_t ldx, float beta, float* C, int64_t ldc)
{
#ifdef NPL_VL
    if (w->at) {
        narrow_gemm(w->at, w->atld, M, N, K, X, ldx, beta, C, ldc);
        return;
    }
    if (w->packed) {
        packed_gemm(w->packed, M, N, K, X, ldx, beta, C, ldc);
        return;
    }
#endif
    w->sgemm(NPL_ROW_MAJOR, NPL_NO_TRANS, NPL_NO_TRANS, M, N, K, 1.0f, w->a, w->lda, X, ldx, beta,
             C, ldc);
}

void npl_tanh_rational_f32(const float* RESTRICT x, float* RESTRICT y, int64_t n)
{
    for (int64_t k = 0; k < n; k++) y[k] = npl_tanhf_rational(x[k]);
}

/* One LSTM forward step's gate math on pre-activations g [4H, B] (rows ld apart):
 * i, j, f, o = sigmoid(a_i), tanh(a_j), sigmoid(a_f), sigmoid(a_o) (stored back in g),
 * c = f * c_prev + i * j, h = o * tanh(c). */
static void lstm_forward_gates(float* RESTRICT g, const float* RESTRICT c_prev, float* RESTRICT c,
                               float* RESTRICT h, int64_t H, int64_t B, int64_t ld)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gi = g + k * ld;
        float* RESTRICT gj = g + (H + k) * ld;
        float* RESTRICT gf = g + (2 * H + k) * ld;
        float* RESTRICT go = g + (3 * H + k) * ld;
        const float* RESTRICT cp = c_prev + k * ld;
        float* RESTRICT ck = c + k * ld;
        float* RESTRICT hk = h + k * ld;
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

/* The columns past their length at step tf (len <= tf) carry the state: dst[r, b] = src[r, b]
 * there (rows ld apart), as TensorFlow's dynamic_rnn carries it past sequence_length.  A pass
 * of its own after the gate math: with the select inside that loop gcc left it scalar. */
static void carry_state(float* RESTRICT dst, const float* RESTRICT src, int64_t rows, int64_t B,
                        int64_t ld, const float* RESTRICT len, float tf)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < B; b++)
            dst[r * ld + b] = tf < len[b] ? dst[r * ld + b] : src[r * ld + b];
}

/* Steps t0 .. t1-1 of the LSTM forward on one batch slice.  G [T, 4H, ld]: the input projection
 * (bias included) of every step, overwritten with the gates; C [T+1, H, ld], Hs [T+1, H, ld]
 * with C[t0], Hs[t0] set; UT: the recurrent rows of the kernel transposed, [4H, H]: packed by
 * the caller once for all its calls (npl/cells.py packs U^T straight from the kernel's rows), or
 * for the steps on sgemm a transposed copy (OpenBLAS runs this product 3-20 % quicker from an
 * untransposed A, measured on C1-C3's shapes).
 *     G[t] += U^T h_t        [4H, H] @ [H, B]   (rgemm, beta = 1: onto the projection)
 *     gates, c_{t+1}, h_{t+1} from G[t], c_t
 * len (or NULL): the columns' sequence lengths, counted from step 0 of G. */
/* A slice that is the whole batch (B = ld: one slice, as every batch under 32 runs): the gate
 * math's [rows, B] arrays, rows B apart, seen as one row of rows*B (element (k, b) at k*B + b
 * either way), so that its inner loop runs along units and columns together and vectorises
 * however few the columns: (H, B, ld) -> (1, H*B, H*B).  Not with sequence lengths, whose test
 * reads len[b]. */
#define NPL_FLAT(B, ld) ((B) == (ld))

static void lstm_forward_loop(const npl_weight* UT, float* G,
                              float* C, float* Hs, int64_t t0, int64_t t1, int64_t H, int64_t B,
                              int64_t ld, const float* len)
{
    const int flat = NPL_FLAT(B, ld);
    const int64_t gH = flat ? 1 : H, gB = flat ? H * B : B, gld = flat ? H * B : ld;
    for (int64_t t = t0; t < t1; t++) {
        float* g = G + t * 4 * H * ld;
        const float* h = Hs + t * H * ld;
        rgemm(UT, 4 * H, B, H, h, ld, 1.0f, g, ld);
        lstm_forward_gates(g, C + t * H * ld, C + (t + 1) * H * ld, Hs + (t + 1) * H * ld,
                           gH, gB, gld);
        if (len) {
            carry_state(C + (t + 1) * H * ld, C + t * H * ld, H, B, ld, len, (float)t);
            carry_state(Hs + (t + 1) * H * ld, h, H, B, ld, len, (float)t);
        }
    }
}

/* dst[r, :B] = src[r, :B] for `rows` rows (row strides ldd, lds). */
static void copy_rows(float* RESTRICT dst, int64_t ldd, const float* RESTRICT src, int64_t lds,
                      int64_t rows, int64_t B)
{
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * ldd, src + r * lds, (size_t)B * sizeof(float));
}

/* A step's gate gradients into the gradient slab: copy_rows, with streaming (non-temporal) stores
 * where the slab is larger than the caches hold anyway (at least npl_stream_min_bytes).  The slab
 * is read again only by the kernel gradient after the loop, from memory; a plain store first
 * reads each destination line in (C1's LSTM: 7.3 MB, rows of 512 bytes 14 KB apart).  Measured,
 * one thread, forward+backward, same process: C1 LSTM 22.7 -> 21.7 ms and GRU 18.0 -> 17.0
 * (medians); a slab that stays in cache lost (C4's 0.6 MB: 0.70 -> 0.72 ms). */
static int64_t npl_stream_min_bytes = 2 << 20;

int64_t npl_set_stream_min_bytes(int64_t n)
{
    const int64_t old = npl_stream_min_bytes;
    npl_stream_min_bytes = n;
    return old;
}

static void slab_rows(float* RESTRICT dst, int64_t ldd, const float* RESTRICT src, int64_t lds,
                      int64_t rows, int64_t B, int stream)
{
#ifdef NPL_VL
    if (stream) {
        const uintptr_t align = NPL_VL * sizeof(float) - 1;
        for (int64_t r = 0; r < rows; r++) {
            float* RESTRICT d = dst + r * ldd;
            const float* RESTRICT sp = src + r * lds;
            int64_t b = 0;
            for (; b < B && ((uintptr_t)(d + b) & align); b++)      /* up to a vector boundary */
                d[b] = sp[b];
            for (; b + NPL_VL <= B; b += NPL_VL)
                NPL_STREAM(d + b, NPL_LOAD(sp + b));
            for (; b < B; b++)
                d[b] = sp[b];
        }
        _mm_sfence();                                   /* the stores complete before any read */
        return;
    }
#endif
    (void)stream;
    copy_rows(dst, ldd, src, lds, rows, B);
}

/* dst[k, b] = src[k, b] for the columns past their length at step tf (len <= tf), 0 for the
 * others (rows ld apart; dst may be src). */
static void carried_rows(float* dst, const float* src, int64_t rows, int64_t B, int64_t ld,
                         const float* RESTRICT len, float tf)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < B; b++)
            dst[r * ld + b] = tf < len[b] ? 0.0f : src[r * ld + b];
}

/* dh[k, b] += dout_t[b, k]: a step's output cotangent, time-major [B, P] (row stride ldo), added
 * to the feature-major carried gradient [P, B] (rows ld apart); not for a column past its length
 * (len <= tf: its output is the constant 0). */
static void add_transposed(float* RESTRICT dh, int64_t ld, const float* RESTRICT dout_t,
                           int64_t ldo, int64_t P, int64_t B, const float* RESTRICT len, float tf)
{
    for (int64_t b = 0; b < B; b++) {
        if (len && !(tf < len[b]))
            continue;
        const float* RESTRICT row = dout_t + b * ldo;
        for (int64_t k = 0; k < P; k++)
            dh[k * ld + b] += row[k];
    }
}

/* The LSTM backward over all steps, t = T-1 .. 0, on one batch slice.  G, C as the forward left
 * them; dh [H, ld] and dc [H, ld]: the final state's cotangents, overwritten with the initial
 * state's; dout [T, ld, H] (row stride ldo, the slice's first row; NULL: no output cotangent);
 * dG: the gradient slab, step t at dG + t * ldstep, rows lddg apart; dgc [4H, ld] scratch (a
 * step's gate gradients, computed there because the GEMM reads them 5-10 % quicker than from
 * the slab, whose rows are T*B apart; then copied into the slab by slab_rows, with streaming
 * stores for a slab of 2 MB and more).
 *     dm = dh + dout[t];  gate math (lstm_backward_rational) -> dG[t], dc;  dh = U dG[t]
 * DZ (or NULL): fold d inputs into the step's GEMM.  Then U is the whole kernel, [I+H, 4H] (the
 * x rows first), and step t writes [dx_t; dh_{t-1}] = U dG[t] into DZ + t (I+H) ld: one GEMM with
 * I more rows instead of a separate all-steps GEMM for d inputs (quicker for narrow inputs).
 * len (or NULL): the columns' sequence lengths.  A column past its length at step t has zero
 * gate gradients, so U dG[t] is 0 there, while dh_{t-1} must be dh_t (the state was carried):
 * the GEMM then adds (beta = 1) onto a target that holds dh_t in those columns and 0 elsewhere
 * (and 0 in the dx rows). */
static void lstm_backward_loop(const npl_weight* U, const float* G,
                               const float* C, const float* dout, int64_t ldo, float* dh,
                               float* dc, float* dG, int64_t ldstep, int64_t lddg, float* dgc,
                               float* DZ, int64_t I, int64_t T, int64_t H, int64_t B, int64_t ld,
                               const float* len)
{
    const int64_t Z = (I + H) * ld;                     /* one step of DZ */
    const int stream = (int64_t)(4 * H * T * ld * sizeof(float)) >= npl_stream_min_bytes;
    const int flat = NPL_FLAT(B, ld) && !len;
    const int64_t gH = flat ? 1 : H, gB = flat ? H * B : B, gld = flat ? H * B : ld;
    for (int64_t t = T - 1; t >= 0; t--) {
        const float tf = (float)t;
        float* dcur = (DZ && t < T - 1) ? DZ + (t + 1) * Z + I * ld : dh;   /* dL/dh_t so far */
        if (dout)
            add_transposed(dcur, ld, dout + t * ld * ldo, ldo, H, B, len, tf);
        lstm_backward_rational(G + t * 4 * H * ld, C + t * H * ld, C + (t + 1) * H * ld, dcur, dc,
                               dgc, gH, gB, gld, len, tf);
        float* target = DZ ? DZ + t * Z : dh;
        const int64_t rows = DZ ? I + H : H;
        float beta = 0.0f;
        if (len) {                                      /* dh_t where carried, else 0 */
            for (int64_t r = 0; r < I; r++)
                memset(target + r * ld, 0, (size_t)B * sizeof(float));
            carried_rows(target + I * ld, dcur, H, B, ld, len, tf);
            beta = 1.0f;
        }
        rgemm(U, rows, B, 4 * H, dgc, ld, beta, target, ld);
        slab_rows(dG + t * ldstep, lddg, dgc, ld, 4 * H, B, stream);
    }
    if (DZ)
        copy_rows(dh, ld, DZ + I * ld, ld, H, B);
}

/* The GRU step's gate math, as gru_gates_forward and gru_state_forward in npl/gates.py (g [3H, B],
 * rows ld apart): r, u = sigmoid(a_r), sigmoid(a_u) in place and rh = r * h_prev; then, after
 * the candidate's GEMM, c~ = tanh(a_c) in place and h = c~ + u * (h_prev - c~). */
static void gru_forward_gates(float* RESTRICT g, const float* RESTRICT h_prev, float* RESTRICT rh,
                              int64_t H, int64_t B, int64_t ld)
{
    for (int64_t k = 0; k < H; k++) {
        float* RESTRICT gr = g + k * ld;
        float* RESTRICT gu = g + (H + k) * ld;
        const float* RESTRICT hp = h_prev + k * ld;
        float* RESTRICT rhk = rh + k * ld;
        for (int64_t b = 0; b < B; b++) {
            float r = npl_sigmoidf_rational(gr[b]);
            gr[b] = r;
            gu[b] = npl_sigmoidf_rational(gu[b]);
            rhk[b] = r * hp[b];
        }
    }
}

static void gru_forward_state(float* RESTRICT g, const float* RESTRICT h_prev, float* RESTRICT h,
                              int64_t H, int64_t B, int64_t ld)
{
    for (int64_t k = 0; k < H; k++) {
        const float* RESTRICT gu = g + (H + k) * ld;
        float* RESTRICT gc = g + (2 * H + k) * ld;
        const float* RESTRICT hp = h_prev + k * ld;
        float* RESTRICT hk = h + k * ld;
        for (int64_t b = 0; b < B; b++) {
            float cand = npl_tanhf_rational(gc[b]);
            gc[b] = cand;
            hk[b] = cand + gu[b] * (hp[b] - cand);
        }
    }
}

/* Steps t0 .. t1-1 of the GRU forward on one batch slice.  G [T, 3H, ld]: projections (a_r; a_u;
 * a_c), bias included, overwritten with (r; u; c~); Hs [T+1, H, ld]; UgT [2H, H] (row stride
 * ldugt) and UcT [H, H] (lduct): the recurrent rows of the two kernels, transposed copies;
 * rh [H, ld] scratch.
 *     G[t][:2H] += Ug^T h_t;  r, u = sigmoid;  rh = r * h_t
 *     G[t][2H:] += Uc^T rh;   c~ = tanh;  h_{t+1} = u * h_t + (1 - u) * c~
 * len (or NULL): the columns' sequence lengths, counted from step 0 of G. */
static void gru_forward_loop(const npl_weight* UgT, const npl_weight* UcT, float* G, float* Hs, float* rh,
                             int64_t t0, int64_t t1, int64_t H, int64_t B, int64_t ld,
                             const float* len)
{
    const int flat = NPL_FLAT(B, ld);
    const int64_t gH = flat ? 1 : H, gB = flat ? H * B : B, gld = flat ? H * B : ld;
    for (int64_t t = t0; t < t1; t++) {
        float* g = G + t * 3 * H * ld;
        const float* h = Hs + t * H * ld;
        float* hn = Hs + (t + 1) * H * ld;
        rgemm(UgT, 2 * H, B, H, h, ld, 1.0f, g, ld);
        gru_forward_gates(g, h, rh, gH, gB, gld);
        rgemm(UcT, H, B, H, rh, ld, 1.0f, g + 2 * H * ld, ld);
        gru_forward_state(g, h, hn, gH, gB, gld);
        if (len)
            carry_state(hn, h, H, B, ld, len, (float)t);
    }
}

/* The GRU backward over all steps on one batch slice.  dh [H, ld]: final-state cotangent,
 * overwritten with the initial state's; dprev [H, ld] and drh [H, ld] (with DZ: [I+H, ld])
 * scratch; the rest as for the LSTM.
 *     dh += dout[t];  u, c~ part (gru_backward_body) -> dG[t][H:], dprev = dh * u
 *     drh = Uc dG[t][2H:];  r part (gru_reset_backward_body) -> dG[t][:H], dprev += drh * r
 *     dh = dprev + Ug dG[t][:2H]   (rgemm, beta = 1)
 * With DZ, Ug and Uc are the whole kernels ([I+H, 2H], [I+H, H]) and step t leaves
 * [dx_t; dh_{t-1}] in DZ + t (I+H) ld: the candidate GEMM gives [its part of dx_t; drh] in drh,
 * and the gates GEMM adds [its part; Ug dG[t][:2H]] onto [that part; dprev].
 * len (or NULL): the columns' sequence lengths.  Past its length a column's gate gradients are 0
 * and dprev = dh (gru_backward_body), so both GEMMs add 0 there and dh_{t-1} = dh_t. */
static void gru_backward_loop(const npl_weight* Ug, const npl_weight* Uc, const float* G, const float* Hs, const float* dout,
                              int64_t ldo, float* dh, float* dprev, float* drh, float* dG,
                              int64_t ldstep, int64_t lddg, float* dgc, float* DZ, int64_t I,
                              int64_t T, int64_t H, int64_t B, int64_t ld, const float* len)
{
    const int64_t Z = (I + H) * ld;
    const int stream = (int64_t)(3 * H * T * ld * sizeof(float)) >= npl_stream_min_bytes;
    const int flat = NPL_FLAT(B, ld);
    const int64_t gH = flat ? 1 : H, gB = flat ? H * B : B, gld = flat ? H * B : ld;
    for (int64_t t = T - 1; t >= 0; t--) {
        float* dcur = (DZ && t < T - 1) ? DZ + (t + 1) * Z + I * ld : dh;
        if (dout)
            add_transposed(dcur, ld, dout + t * ld * ldo, ldo, H, B, len, (float)t);
        const float* g = G + t * 3 * H * ld;
        const float* h = Hs + t * H * ld;
        if (len)
            gru_backward_body(g, ld, h, dcur, dgc, ld, dprev, H, B, ld, len, (float)t);
        else
            gru_backward_body(g, gld, h, dcur, dgc, gld, dprev, gH, gB, gld, 0, 0.0f);
        const int64_t rows = DZ ? I + H : H;
        rgemm(Uc, rows, B, H, dgc + 2 * H * ld, ld, 0.0f, drh, ld);
        const float* d_rh = DZ ? drh + I * ld : drh;
        gru_reset_backward_body(g, gld, h, d_rh, dprev, dgc, gld, gH, gB, gld);
        if (DZ) {
            float* z = DZ + t * Z;
            copy_rows(z, ld, drh, ld, I, B);
            copy_rows(z + I * ld, ld, dprev, ld, H, B);
            rgemm(Ug, I + H, B, 2 * H, dgc, ld, 1.0f, z, ld);
        } else {
            rgemm(Ug, H, B, 2 * H, dgc, ld, 1.0f, dprev, ld);
            copy_rows(dh, ld, dprev, ld, H, B);
        }
        slab_rows(dG + t * ldstep, lddg, dgc, ld, 3 * H, B, stream);
    }
    if (DZ)
        copy_rows(dh, ld, DZ + I * ld, ld, H, B);
}

/* ------------------------------------------------------------------ the thread pool
 * Workers that wait for work by polling for a while before they sleep.  A thread that sleeps
 * between calls costs its wake-up on every call: on a 2-vCPU VM a pass over C1 with threads
 * started per call measured 21.9 ms against 13.7 on one thread, with the calling thread idle
 * 44 % of the time, waiting for the other vCPU to wake.  OpenBLAS's own pool polls the same way
 * (for much longer).  A job is a function of the part index q: the calling thread runs part 0,
 * worker q-1 part q.  One job at a time: a call made while another thread's job is running runs
 * all its parts itself. */
#define NPL_SPIN_US 2000                /* how long an idle worker polls before it sleeps */

static struct {
    pthread_mutex_t run;                /* held while a job runs */
    pthread_mutex_t mu;                 /* guards the sleep below */
    pthread_cond_t cv;
    int64_t nworkers, sleeping, nparts;
    uint64_t gen;                       /* job generation (atomic) */
    int64_t pending;                    /* workers still on the current job (atomic) */
    void (*fn)(void*, int64_t);
    void* arg;
    pthread_t th[NPL_MAX_THREADS];
    uint64_t start_gen[NPL_MAX_THREADS]; /* the generation a worker was started in */
    int64_t tid[NPL_MAX_THREADS];        /* the workers' kernel thread ids */
} npl_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
              0, 0, 0, 0, 0, 0, 0, {0}, {0}, {0}};

static inline void npl_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t npl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void* npl_worker(void* arg)
{
    const int64_t q = (int64_t)(intptr_t)arg;            /* this worker runs part q */
    uint64_t seen = npl_pool.start_gen[q - 1];            /* (the job after it is ours) */
    __atomic_store_n(&npl_pool.tid[q - 1], (int64_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    for (;;) {
        int64_t t0 = npl_now_us();
        for (uint64_t n = 1; __atomic_load_n(&npl_pool.gen, __ATOMIC_ACQUIRE) == seen; n++) {
            npl_cpu_relax();
            if (n % 256 == 0) {
                if (npl_now_us() - t0 < NPL_SPIN_US) {
                    sched_yield();
                    continue;
                }
                pthread_mutex_lock(&npl_pool.mu);
                npl_pool.sleeping++;
                while (__atomic_load_n(&npl_pool.gen, __ATOMIC_ACQUIRE) == seen)
                    pthread_cond_wait(&npl_pool.cv, &npl_pool.mu);
                npl_pool.sleeping--;
                pthread_mutex_unlock(&npl_pool.mu);
            }
        }
        seen = __atomic_load_n(&npl_pool.gen, __ATOMIC_ACQUIRE);
        if (q < npl_pool.nparts)
            npl_pool.fn(npl_pool.arg, q);
        __atomic_fetch_sub(&npl_pool.pending, 1, __ATOMIC_ACQ_REL);
    }
    return 0;
}

static void npl_pool_after_fork(void)
{
    /* the child has only the forking thread: forget the workers, start new ones on demand */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    npl_pool.run = m;
    npl_pool.mu = m;
    npl_pool.cv = c;
    npl_pool.nworkers = npl_pool.sleeping = 0;
    memset(npl_pool.tid, 0, sizeof npl_pool.tid);
}

/* fn(arg, q) for q < nparts, part 0 on the calling thread; returns the parts run in parallel
 * (1 when they all ran on the calling thread). */
static int64_t npl_pool_run(void (*fn)(void*, int64_t), void* arg, int64_t nparts)
{
    static int atfork_set = 0;
    if (nparts > 1 && pthread_mutex_trylock(&npl_pool.run) == 0) {
        if (!atfork_set) {
            pthread_atfork(0, 0, npl_pool_after_fork);
            atfork_set = 1;
        }
        while (npl_pool.nworkers < nparts - 1) {          /* start workers on demand */
            npl_pool.start_gen[npl_pool.nworkers] = __atomic_load_n(&npl_pool.gen, __ATOMIC_ACQUIRE);
            if (pthread_create(&npl_pool.th[npl_pool.nworkers], 0, npl_worker,
                               (void*)(intptr_t)(npl_pool.nworkers + 1)) != 0)
                break;
            npl_pool.nworkers++;
        }
        const int64_t nw = npl_pool.nworkers;
        if (nw >= nparts - 1) {
            npl_pool.fn = fn;
            npl_pool.arg = arg;
            npl_pool.nparts = nparts;
            __atomic_store_n(&npl_pool.pending, nw, __ATOMIC_RELEASE);
            __atomic_fetch_add(&npl_pool.gen, 1, __ATOMIC_ACQ_REL);
            pthread_mutex_lock(&npl_pool.mu);
            if (npl_pool.sleeping)
                pthread_cond_broadcast(&npl_pool.cv);
            pthread_mutex_unlock(&npl_pool.mu);
            fn(arg, 0);
            for (uint64_t n = 1; __atomic_load_n(&npl_pool.pending, __ATOMIC_ACQUIRE) > 0; n++) {
                npl_cpu_relax();
                if (n % 64 == 0)
                    sched_yield();                        /* a polling neighbour may want this core */
            }
            pthread_mutex_unlock(&npl_pool.run);
            return nparts;
        }
        pthread_mutex_unlock(&npl_pool.run);
    }
    for (int64_t q = 0; q < nparts; q++)                  /* busy, or no threads: run here */
        fn(arg, q);
    return 1;
}

/* The number of this process's threads, other than the caller and the pool's workers, that are
 * runnable now (state R in /proc/self/task/<tid>/stat): a BLAS pool polling for work (OpenBLAS's
 * workers poll for about 0.1 s after each threaded call), or any other busy thread.  With one of
 * them on the cores the pool would share a core with it: a C1 GRU forward measured 6.1 ms
 * against 3.6 ms, slower than leaving the threads to the BLAS (4.1 ms).  Read at most once a
 * millisecond (a listing costs tens of microseconds); -1 where /proc cannot be read. */
int64_t npl_pool_others_runnable(void)
{
    static int64_t last_us = INT64_MIN / 2, last = 0;
    const int64_t now = npl_now_us();
    if (now - __atomic_load_n(&last_us, __ATOMIC_RELAXED) < 1000)
        return __atomic_load_n(&last, __ATOMIC_RELAXED);
    DIR* d = opendir("/proc/self/task");
    if (!d)
        return -1;
    const int64_t self = (int64_t)syscall(SYS_gettid);
    int64_t count = 0;
    struct dirent* e;
    char path[64], buf[512];
    while ((e = readdir(d)) != 0) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        const int64_t tid = strtoll(e->d_name, 0, 10);
        int ours = tid == self;
        for (int64_t q = 0; q < npl_pool.nworkers && !ours; q++)
            ours = __atomic_load_n(&npl_pool.tid[q], __ATOMIC_ACQUIRE) == tid;
        if (ours)
            continue;
        snprintf(path, sizeof path, "/proc/self/task/%lld/stat", (long long)tid);
        FILE* f = fopen(path, "r");
        if (!f)
            continue;
        const size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        const char* r = strrchr(buf, ')');              /* the name may hold spaces and ')' */
        if (r && r[1] == ' ' && r[2] == 'R')
            count++;
    }
    closedir(d);
    __atomic_store_n(&last, count, __ATOMIC_RELAXED);
    __atomic_store_n(&last_us, now, __ATOMIC_RELAXED);
    return count;
}

/* ------------------------------------------------------------------ the batch split
 * One pass's arguments (the union of what the four loops take), and a slice of batch columns
 * [b0, b0 + nb) of it: every batch-major pointer moves b0 columns (dout, time-major, b0 rows). */
enum { NPL_LSTM_FWD, NPL_LSTM_BWD, NPL_GRU_FWD, NPL_GRU_BWD };
typedef struct {
    int kind;
    npl_weight U1, U2;
    float *G, *C, *Hs, *dh, *dc, *dprev, *drh, *dG, *dgc, *DZ, *rh;
    const float *dout, *len;
    int64_t ldo, ldstep, lddg, I, t0, t1, T, H, B;
} npl_pass;

typedef struct { const npl_pass* p; int64_t b0, nb; } npl_slice;

#define NPL_AT(ptr, off) ((ptr) ? (ptr) + (off) : (ptr))

static void run_slice(const npl_pass* p, int64_t b0, int64_t nb)
{
    const int64_t ld = p->B;
    const float* dout = NPL_AT(p->dout, b0 * p->ldo);
    const float* len = NPL_AT(p->len, b0);
    switch (p->kind) {
    case NPL_LSTM_FWD:
        lstm_forward_loop(&p->U1, p->G + b0, p->C + b0, p->Hs + b0, p->t0, p->t1,
                          p->H, nb, ld, len);
        break;
    case NPL_LSTM_BWD:
        lstm_backward_loop(&p->U1, p->G + b0, p->C + b0, dout, p->ldo,
                           p->dh + b0, p->dc + b0, p->dG + b0, p->ldstep, p->lddg, p->dgc + b0,
                           NPL_AT(p->DZ, b0), p->I, p->T, p->H, nb, ld, len);
        break;
    case NPL_GRU_FWD:
        gru_forward_loop(&p->U1, &p->U2, p->G + b0, p->Hs + b0,
                         p->rh + b0, p->t0, p->t1, p->H, nb, ld, len);
        break;
    case NPL_GRU_BWD:
        gru_backward_loop(&p->U1, &p->U2, p->G + b0, p->Hs + b0, dout,
                          p->ldo, p->dh + b0, p->dprev + b0, p->drh + b0, p->dG + b0, p->ldstep,
                          p->lddg, p->dgc + b0, NPL_AT(p->DZ, b0), p->I, p->T, p->H, nb, ld, len);
        break;
    }
}

typedef struct { const npl_pass* p; int64_t w; } npl_split;

static void slice_task(void* arg, int64_t q)
{
    const npl_split* s = (const npl_split*)arg;
    const int64_t b0 = q * s->w;
    run_slice(s->p, b0, (b0 + s->w <= s->p->B) ? s->w : s->p->B - b0);
}

/* Columns per slice: B split in n, rounded up to a multiple of 16 (the last slice takes the
 * rest). */
static int64_t slice_width(int64_t B, int64_t n) { return (((B + n - 1) / n) + 15) / 16 * 16; }

/* Runs the pass on up to nthreads slices of the batch; returns the number run in parallel.  The
 * weights U1 [M1, K1] and U2 [M2, K2] (M2 = 0: none) are packed first, once for all slices and
 * steps (read-only from then on), and freed at the end; a weight the caller packed already is
 * used as it is (and left to the caller). */
static int64_t run_pass(npl_pass* p, int64_t nthreads, int64_t M1, int64_t K1, int64_t M2,
                        int64_t K2)
{
    int64_t n = 1;
    if ((!p->U1.a && !p->U1.packed && !p->U1.ta) || (M2 > 0 && !p->U2.a && !p->U2.packed && !p->U2.ta))
        return -1;                                      /* neither the matrix nor a packed copy */
#ifdef NPL_VL
    if (npl_packed_gemm_enabled() && npl_narrow_cols(p->B)) {           /* one slice */
        npl_narrow_a(&p->U1, M1, K1);
        if (M2 > 0)
            npl_narrow_a(&p->U2, M2, K2);
    }
#endif
    if (!p->U1.at && npl_a_from_t(&p->U1, M1, K1) < 0)
        return -1;
    if (M2 > 0 && !p->U2.at && npl_a_from_t(&p->U2, M2, K2) < 0) {
        free(p->U1.at);
        free(p->U1.abuf);
        return -1;
    }
    if (!p->U1.at)
        npl_pack_a(&p->U1, M1, K1);
    if (M2 > 0 && !p->U2.at)
        npl_pack_a(&p->U2, M2, K2);
    if (nthreads > NPL_MAX_THREADS) nthreads = NPL_MAX_THREADS;
    if (nthreads <= 1 || p->B < 32) {
        run_slice(p, 0, p->B);
    } else {
        npl_split s = {p, slice_width(p->B, nthreads)};
        n = npl_pool_run(slice_task, &s, (p->B + s.w - 1) / s.w);
    }
    if (p->U1.own)
        free(p->U1.packed);
    if (p->U2.own)
        free(p->U2.packed);
    free(p->U1.at);
    free(p->U2.at);
    free(p->U1.abuf);
    free(p->U2.abuf);
    return n;
}

/* packed: NULL, or the weight packed by npl_pack_f32 (then a is not read and may be NULL).
 * lda < 0: a is A^T [K, M] with row stride -lda (a forward's recurrent rows read in place). */
static npl_weight npl_weight_of(npl_sgemm_fn sgemm, const float* a, int64_t lda,
                                const float* packed)
{
#ifndef NPL_VL
    packed = NULL;                                      /* no kernel here to read it */
#endif
    npl_weight w = {sgemm, a, lda, (float*)packed, 0, NULL, 0, NULL, 0, NULL};
    if (lda < 0) {
        w.a = NULL;
        w.ta = a;
        w.tald = -lda;
    }
    return w;
}

/* The entry points (npl/kernels/cpu.py): arrays with rows of B floats (the whole batch), split
 * over nthreads; len: NULL, or each column's sequence length as a float [B] (a column is past
 * its end at step t when len <= t).  The forwards take their recurrent weights as the matrix
 * (UT, ldut), or packed by npl_pack_f32 (UTp, not NULL: the caller packed it once for all its
 * calls; UT is then not read).  Each returns the number of slices it ran, -1 where a weight has
 * neither form. */
int64_t npl_lstm_forward_seq_f32(npl_sgemm_fn sgemm, const float* UT, int64_t ldut,
                                 const float* UTp, float* G,
                                 float* C, float* Hs, int64_t t0, int64_t t1, int64_t H, int64_t B,
                                 const float* len, int64_t nthreads)
{
    npl_pass p = {0};
    p.len = len;
    p.kind = NPL_LSTM_FWD; p.U1 = npl_weight_of(sgemm, UT, ldut, UTp); p.G = G; p.C = C; p.Hs = Hs;
    p.t0 = t0; p.t1 = t1; p.H = H; p.B = B;
    return run_pass(&p, nthreads, 4 * H, H, 0, 0);
}

int64_t npl_lstm_backward_seq_f32(npl_sgemm_fn sgemm, const float* U, int64_t ldu, const float* G,
                                  const float* C, const float* dout, int64_t ldo, float* dh,
                                  float* dc, float* dG, int64_t ldstep, int64_t lddg, float* dgc,
                                  float* DZ, int64_t I, int64_t T, int64_t H, int64_t B,
                                  const float* len, int64_t nthreads)
{
    npl_pass p = {0};
    p.len = len;
    p.kind = NPL_LSTM_BWD; p.U1 = npl_weight_of(sgemm, U, ldu, NULL); p.G = (float*)G;
    p.C = (float*)C; p.dout = dout; p.ldo = ldo; p.dh = dh; p.dc = dc; p.dG = dG;
    p.ldstep = ldstep; p.lddg = lddg; p.dgc = dgc; p.DZ = DZ; p.I = I; p.T = T; p.H = H; p.B = B;
    return run_pass(&p, nthreads, DZ ? I + H : H, 4 * H, 0, 0);
}

int64_t npl_gru_forward_seq_f32(npl_sgemm_fn sgemm, const float* UgT, int64_t ldugt,
                                const float* UgTp, const float* UcT, int64_t lduct,
                                const float* UcTp, float* G, float* Hs, float* rh,
                                int64_t t0, int64_t t1, int64_t H, int64_t B, const float* len,
                                int64_t nthreads)
{
    npl_pass p = {0};
    p.len = len;
    p.kind = NPL_GRU_FWD; p.U1 = npl_weight_of(sgemm, UgT, ldugt, UgTp);
    p.U2 = npl_weight_of(sgemm, UcT, lduct, UcTp);
    p.G = G; p.Hs = Hs; p.rh = rh; p.t0 = t0; p.t1 = t1; p.H = H; p.B = B;
    return run_pass(&p, nthreads, 2 * H, H, H, H);
}

int64_t npl_gru_backward_seq_f32(npl_sgemm_fn sgemm, const float* Ug, int64_t ldug,
                                 const float* Uc, int64_t lduc, const float* G, const float* Hs,
                                 const float* dout, int64_t ldo, float* dh, float* dprev,
                                 float* drh, float* dG, int64_t ldstep, int64_t lddg, float* dgc,
                                 float* DZ, int64_t I, int64_t T, int64_t H, int64_t B,
                                 const float* len, int64_t nthreads)
{
    npl_pass p = {0};
    p.len = len;
    p.kind = NPL_GRU_BWD; p.U1 = npl_weight_of(sgemm, Ug, ldug, NULL);
    p.U2 = npl_weight_of(sgemm, Uc, lduc, NULL);
    p.G = (float*)G; p.Hs = (float*)Hs; p.dout = dout; p.ldo = ldo; p.dh = dh; p.dprev = dprev;
    p.drh = drh; p.dG = dG; p.ldstep = ldstep; p.lddg = lddg; p.dgc = dgc; p.DZ = DZ; p.I = I;
    p.T = T; p.H = H; p.B = B;
    return run_pass(&p, nthreads, DZ ? I + H : H, 2 * H, DZ ? I + H : H, H);
}

/* ------------------------------------------------------------------ a GEMM over threads
 * C[b] = alpha op(A[b]) op(B[b]) + beta C[b] for b < batch (row-major; A, B, C step sA, sB, sC
 * floats from one b to the next), with the larger of the output's dimensions cut into nthreads
 * pieces (multiples of 16), each thread calling the single-threaded sgemm on its piece for every
 * b.  The all-steps GEMMs of a pass (input projection, kernel gradient, d inputs) use it while
 * the C loops run threaded, so the BLAS's own thread pool stays asleep during the pass. */
typedef struct {
    npl_sgemm_fn sgemm;
    int64_t ta, tb, M, N, K, lda, ldb, ldc, batch, sA, sB, sC;
    float alpha, beta;
    const float *A, *Bm;
    float* Cm;
} npl_gemm;

typedef struct { const npl_gemm* g; int64_t w; int split_n; } npl_gemm_split;

static void gemm_task(void* arg, int64_t q)
{
    const npl_gemm_split* s = (const npl_gemm_split*)arg;
    const npl_gemm* g = s->g;
    const int64_t D = s->split_n ? g->N : g->M;
    const int64_t d0 = q * s->w, d1 = d0 + s->w < D ? d0 + s->w : D;
    const int64_t m0 = s->split_n ? 0 : d0, n0 = s->split_n ? d0 : 0;
    const int64_t m = s->split_n ? g->M : d1 - d0, n = s->split_n ? d1 - d0 : g->N;
    if (m <= 0 || n <= 0) return;
    for (int64_t b = 0; b < g->batch; b++) {
        const float* A = g->A + b * g->sA + (g->ta == NPL_TRANS ? m0 : m0 * g->lda);
        const float* Bm = g->Bm + b * g->sB + (g->tb == NPL_TRANS ? n0 * g->ldb : n0);
        float* Cm = g->Cm + b * g->sC + m0 * g->ldc + n0;
        g->sgemm(NPL_ROW_MAJOR, g->ta, g->tb, m, n, g->K, g->alpha, A, g->lda, Bm, g->ldb,
                 g->beta, Cm, g->ldc);
    }
}

int64_t npl_sgemm_threads_f32(npl_sgemm_fn sgemm, int64_t ta, int64_t tb, int64_t M, int64_t N,
                              int64_t K, float alpha, const float* A, int64_t lda, int64_t sA,
                              const float* Bm, int64_t ldb, int64_t sB, float beta, float* Cm,
                              int64_t ldc, int64_t sC, int64_t batch, int64_t nthreads)
{
    npl_gemm g = {sgemm, ta, tb, M, N, K, lda, ldb, ldc, batch, sA, sB, sC, alpha, beta, A, Bm, Cm};
    if (nthreads > NPL_MAX_THREADS) nthreads = NPL_MAX_THREADS;
    const int split_n = N >= M;
    const int64_t D = split_n ? N : M;
    npl_gemm_split s = {&g, D, split_n};
    if (nthreads <= 1 || D < 32) {
        gemm_task(&s, 0);
        return 1;
    }
    s.w = slice_width(D, nthreads);
    return npl_pool_run(gemm_task, &s, (D + s.w - 1) / s.w);
}

/* ------------------------------------------------------------------ the packed kernel as a GEMM
 * C[b] = A X[b] + beta C[b] (beta 0 or 1) for b < batch, one A for all: A [M, K] with element
 * (m, k) at A[m * sam + k * sak] (a transposed view is sam = 1), X[b] [K, N] with contiguous rows
 * ldx apart, sX floats from one b to the next, C[b] likewise (ldc, sC).  A is packed once and the
 * columns are split over nthreads (multiples of 16).  The input projection of a pass uses it: the
 * kernel's input rows times each step's inputs [I+1, B] (on C1-C2's shapes 110-115 GFLOP/s,
 * against 90-103 for OpenBLAS on the same product batched).  Returns the number of threads used,
 * 0 when the kernel is not built or switched off, -1 when the packed copy found no memory. */
typedef struct {
    const float *Ap, *X;
    float* C;
    int64_t M, K, N, ldx, sX, ldc, sC, batch, w;
    float beta;
} npl_packed_job;

static void packed_task(void* arg, int64_t q)
{
#ifdef NPL_VL
    const npl_packed_job* j = (const npl_packed_job*)arg;
    const int64_t n0 = q * j->w, n = n0 + j->w <= j->N ? j->w : j->N - n0;
    for (int64_t b = 0; b < j->batch; b++)
        packed_gemm(j->Ap, j->M, n, j->K, j->X + b * j->sX + n0, j->ldx, j->beta,
                    j->C + b * j->sC + n0, j->ldc);
#else
    (void)arg; (void)q;
#endif
}

#ifdef NPL_VL
/* The batch of products on At (A^T, rows npl_narrow_ld(M) apart), which it frees; 0 (nothing
 * done) where At is NULL, for want of memory. */
static int narrow_matmul_run(float* At, int64_t M, int64_t K, const float* X, int64_t ldx,
                             int64_t sX, int64_t N, float beta, float* C, int64_t ldc, int64_t sC,
                             int64_t batch)
{
    if (!At)
        return 0;
    for (int64_t b = 0; b < batch; b++)
        narrow_gemm(At, npl_narrow_ld(M), M, N, K, X + b * sX, ldx, beta, C + b * sC, ldc);
    free(At);
    return 1;
}

/* A^T [K, M] (rows npl_narrow_ld(M) apart) of A with element (m, k) at a[m * sam + k * sak], or
 * NULL (no memory): a product used once goes to the narrow form without packing A first. */
static float* npl_transpose_a(const float* RESTRICT a, int64_t sam, int64_t sak, int64_t M,
                              int64_t K)
{
    void* buf = NULL;
    const int64_t ld = npl_narrow_ld(M);
    if (posix_memalign(&buf, 64, (size_t)(ld * K) * sizeof(float)) != 0)
        return NULL;
    float* RESTRICT at = (float*)buf;
    for (int64_t k = 0; k < K; k++)
        for (int64_t m = 0; m < M; m++) at[k * ld + m] = a[m * sam + k * sak];
    return at;
}
#endif

/* The product on a packed A (Ap: npl_pack's layout), columns split over up to nthreads threads. */
static int64_t packed_matmul_run(const float* Ap, int64_t M, int64_t K, const float* X,
                                 int64_t ldx, int64_t sX, int64_t N, float beta, float* C,
                                 int64_t ldc, int64_t sC, int64_t batch, int64_t nthreads)
{
    npl_packed_job j = {Ap, X, C, M, K, N, ldx, sX, ldc, sC, batch, N, beta};
    int64_t n = 1;
#ifdef NPL_VL
    if (npl_narrow_cols(N) && narrow_matmul_run(npl_unpack_t(Ap, M, K), M, K, X, ldx, sX, N, beta,
                                                C, ldc, sC, batch))
        return 1;
#endif
    if (nthreads > NPL_MAX_THREADS) nthreads = NPL_MAX_THREADS;
    if (nthreads <= 1 || N < 32) {
        packed_task(&j, 0);
    } else {
        j.w = slice_width(N, nthreads);
        n = npl_pool_run(packed_task, &j, (N + j.w - 1) / j.w);
    }
    return n;
}

int64_t npl_packed_matmul_f32(const float* A, int64_t sam, int64_t sak, int64_t M, int64_t K,
                              const float* X, int64_t ldx, int64_t sX, int64_t N, float beta,
                              float* C, int64_t ldc, int64_t sC, int64_t batch, int64_t nthreads)
{
    if (!npl_packed_gemm_enabled())
        return 0;
#ifdef NPL_VL
    if (npl_narrow_cols(N) && narrow_matmul_run(npl_transpose_a(A, sam, sak, M, K), M, K, X, ldx,
                                                sX, N, beta, C, ldc, sC, batch))
        return 1;
#endif
    float* Ap = npl_pack(A, sam, sak, M, K);
    if (!Ap)
        return -1;
    const int64_t n = packed_matmul_run(Ap, M, K, X, ldx, sX, N, beta, C, ldc, sC, batch, nthreads);
    free(Ap);
    return n;
}

/* The same with A packed by the caller (npl_pack_f32), for an A used by several calls (the input
 * projection of a forward that runs a chunk of steps per call).  0 where the kernel is not built
 * (a packed A exists only where it is). */
int64_t npl_prepacked_matmul_f32(const float* Ap, int64_t M, int64_t K, const float* X,
                                 int64_t ldx, int64_t sX, int64_t N, float beta, float* C,
                                 int64_t ldc, int64_t sC, int64_t batch, int64_t nthreads)
{
#ifdef NPL_VL
    return packed_matmul_run(Ap, M, K, X, ldx, sX, N, beta, C, ldc, sC, batch, nthreads);
#else
    (void)Ap; (void)M; (void)K; (void)X; (void)ldx; (void)sX; (void)N; (void)beta; (void)C;
    (void)ldc; (void)sC; (void)batch; (void)nthreads;
    return 0;
#endif
}

/* ------------------------------------------------------------------ the kernel gradient
 * out [I+P+1, nG] (row stride ldo) = sum_t Z_t^T dG_t^T, Z_t^T = [x_t | h_t (* s_t) | 1] [B, I+P+1]:
 * the kernel gradient (rows :I+P) and the bias gradient (row I+P) of a layer from its gate
 * gradients dG [nG, T*B] (rows lddg apart, step t in columns t*B ..), inputs x (element (t, b, i)
 * at X[t*sxt + b*sxb + i]), states h (element (t, k, b) at Hs[t*sht + k*shk + b]; the state the
 * step read) and, for the GRU's candidate, the reset gate s (the same, S, sst, ssk; NULL: none).
 * As one GEMM this is [I+P+1, T*B] @ [T*B, nG] with its second operand transposed (the slab is
 * gate-major), which OpenBLAS ran at 86-90 GFLOP/s on C1; here each step is the transposed
 * product dG_t [nG, B] @ Z_t^T [B, I+P+1] on the register-blocked kernel (dG_t read in place),
 * with Z_t^T built per step from x_t's rows and a transposed copy of h_t, accumulated in
 * [nG, I+P+1] and transposed into out at the end.  Threads take contiguous ranges of steps, each
 * its own accumulator, summed in thread order.  Returns the number of threads used, 0 where the
 * kernel is not built or is switched off, -1 when memory ran out (out not written). */
#ifndef NPL_KGRAD_K
#define NPL_KGRAD_K 512
#endif
#ifdef NPL_VL
typedef struct {
    const float *dG, *X, *Hs, *S;
    int64_t lddg, nG, sxt, sxb, I, sht, shk, sst, ssk, P, T, B, Mp, ldz, nparts;
    float* acc;
    int failed;
} npl_kgrad;

static void kgrad_task(void* arg, int64_t q)
{
    npl_kgrad* j = (npl_kgrad*)arg;
    const int64_t t0 = q * j->T / j->nparts, t1 = (q + 1) * j->T / j->nparts;
    float* acc = j->acc + q * j->nG * j->ldz;
    const int64_t B = j->B, I = j->I, P = j->P, ldz = j->ldz;
    if (t1 <= t0) {
        memset(acc, 0, (size_t)(j->nG * ldz) * sizeof(float));
        return;
    }
    const int64_t chunk = (NPL_KGRAD_K + B - 1) / B;     /* steps per product */
    float* Z = (float*)malloc((size_t)(chunk * B * ldz) * sizeof(float));
    if (!Z) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t t = t0; t < t1; t += chunk) {
        const int64_t n = t1 - t < chunk ? t1 - t : chunk;
        for (int64_t s = 0; s < n; s++) {
            float* Zs = Z + s * B * ldz;                  /* step t + s: rows s*B .. */
            for (int64_t b = 0; b < B; b++) {
                float* row = Zs + b * ldz;
                memcpy(row, j->X + (t + s) * j->sxt + b * j->sxb, (size_t)I * sizeof(float));
                row[I + P] = 1.0f;
            }
            for (int64_t k = 0; k < P; k++) {
                const float* RESTRICT hk = j->Hs + (t + s) * j->sht + k * j->shk;
                float* RESTRICT z = Zs + I + k;
                if (j->S) {
                    const float* RESTRICT sk = j->S + (t + s) * j->sst + k * j->ssk;
                    for (int64_t b = 0; b < B; b++) z[b * ldz] = hk[b] * sk[b];
                } else {
                    for (int64_t b = 0; b < B; b++) z[b * ldz] = hk[b];
                }
            }
        }
        /* acc [nG, Mp] (+)= dG[:, t*B .. (t+n)*B] [nG, n*B] @ Z^T [n*B, Mp] */
        direct_gemm(j->dG + t * B, j->lddg, j->nG, j->Mp, n * B, Z, ldz, t > t0 ? 1.0f : 0.0f,
                    acc, ldz);
    }
    free(Z);
}
#endif

int64_t npl_kernel_grad_f32(const float* dG, int64_t lddg, int64_t nG, const float* X,
                            int64_t sxt, int64_t sxb, int64_t I, const float* Hs, int64_t sht,
                            int64_t shk, const float* S, int64_t sst, int64_t ssk, int64_t P,
                            int64_t T, int64_t B, float* out, int64_t ldo, int64_t parts,
                            int64_t nthreads)
{
#ifdef NPL_VL
    if (!npl_packed_gemm_enabled() || T <= 0 || B <= 0 || nG <= 0)
        return 0;
    const int64_t Mp = I + P + 1, ldz = (Mp + 15) / 16 * 16;
    /* The steps are split into `parts` partial sums, added in order at the end: the bits depend
     * on `parts` alone, so the caller keeps it fixed (npl's thread setting) while `nthreads`,
     * the threads free right now, only decides whether the parts run at once or one by one. */
    int64_t nparts = parts < 1 ? 1 : (parts > NPL_MAX_THREADS ? NPL_MAX_THREADS : parts);
    if (nparts > T) nparts = T;
    npl_kgrad j = {dG, X, Hs, S, lddg, nG, sxt, sxb, I, sht, shk, sst, ssk, P, T, B, Mp, ldz,
                   nparts, NULL, 0};
    j.acc = (float*)malloc((size_t)(nparts * nG * ldz) * sizeof(float));
    if (!j.acc)
        return -1;
    int64_t used = 1;
    if (nparts > 1 && nthreads > 1)
        used = npl_pool_run(kgrad_task, &j, nparts);
    else
        for (int64_t q = 0; q < nparts; q++) kgrad_task(&j, q);
    if (j.failed) {
        free(j.acc);
        return -1;
    }
    float* acc = j.acc;
    for (int64_t q = 1; q < nparts; q++) {
        const float* RESTRICT part = j.acc + q * nG * ldz;
        for (int64_t i = 0; i < nG * ldz; i++) acc[i] += part[i];
    }
    for (int64_t m = 0; m < Mp; m++)
        for (int64_t g = 0; g < nG; g++) out[m * ldo + g] = acc[g * ldz + m];
    free(j.acc);
    return used;
#else
    (void)dG; (void)lddg; (void)nG; (void)X; (void)sxt; (void)sxb; (void)I; (void)Hs; (void)sht;
    (void)shk; (void)S; (void)sst; (void)ssk; (void)P; (void)T; (void)B; (void)out; (void)ldo;
    (void)parts; (void)nthreads;
    return 0;
#endif
}

/* ------------------------------------------------------------------ a transposing copy
 * dst[i, c, r] = src[i, r, c] for i < n, r < R, c < C: src's rows lds floats apart and its
 * matrices ss apart, dst's rows ldd apart and its matrices sd apart (both with contiguous
 * elements in a row).  In 16 x 16 blocks, so both sides are read and written a cache line at a
 * time: the public outputs [T, B, P] from the feature-major state slab [T, P, B] (C1: 0.12 ms
 * against 0.30 for NumPy's strided copy; C2 1.95 against 2.88). */
void npl_transpose_f32(const float* RESTRICT src, int64_t ss, int64_t lds, float* RESTRICT dst,
                       int64_t sd, int64_t ldd, int64_t n, int64_t R, int64_t C)
{
    for (int64_t i = 0; i < n; i++) {
        const float* RESTRICT s = src + i * ss;
        float* RESTRICT d = dst + i * sd;
        for (int64_t r0 = 0; r0 < R; r0 += 16)
            for (int64_t c0 = 0; c0 < C; c0 += 16) {
                const int64_t r1 = r0 + 16 < R ? r0 + 16 : R, c1 = c0 + 16 < C ? c0 + 16 : C;
                if (r1 - r0 == 16 && c1 - c0 == 16) {
                    for (int64_t c = c0; c < c0 + 16; c++)
#pragma GCC unroll 16
                        for (int64_t r = r0; r < r0 + 16; r++) d[c * ldd + r] = s[r * lds + c];
                } else {
                    for (int64_t c = c0; c < c1; c++)
                        for (int64_t r = r0; r < r1; r++) d[c * ldd + r] = s[r * lds + c];
                }
            }
    }
}
