/* dense.c — small-GEMM kernels for fully connected layers (see dense.h).
 *
 * Forward y = x w^T is either a dot product per output (tn_dense_forward: 4 rows of x × 4
 * rows of w accumulate 16 vectors along `in`, one add tree folds them into the 16 outputs)
 * or, with w transposed once by the caller, `out` in lanes (tn_dense_forward_t). That form
 * and the backward dx = dy w, dw += dy^T x share one kernel: 4 broadcast rows × up to 6
 * vectors per block, 24 accumulators, bias/ReLU/ReLU-mask epilogues. Block edges reuse the
 * last row instead of branching; those duplicates are never stored. Without AVX-512
 * everything goes through the CBLAS.
 */
#include "tensor/dense.h"

#include <string.h>

#include "tensor/kernels.h"

#ifdef __AVX512F__
#include <immintrin.h>

#include "tensor/simd512.h"

#define AI static inline __attribute__((always_inline))

static __mmask16 lanes(int n) { return n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 16 vectors -> one vector whose lane q is the sum of the lanes of v[q]. */
AI __m512 fold16(__m512 v[16])
{
    __m512 s1[8], s2[4];
    for (int p = 0; p < 8; p++)
        s1[p] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * p], v[2 * p + 1]),
                              _mm512_unpackhi_ps(v[2 * p], v[2 * p + 1]));
    for (int q = 0; q < 4; q++) {
        __m512d a = _mm512_castps_pd(s1[2 * q]), b = _mm512_castps_pd(s1[2 * q + 1]);
        s2[q] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                              _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    __m512 u0 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[0], s2[1], 0x88),
                              _mm512_shuffle_f32x4(s2[0], s2[1], 0xDD));
    __m512 u1 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2], s2[3], 0x88),
                              _mm512_shuffle_f32x4(s2[2], s2[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(u0, u1, 0x88), _mm512_shuffle_f32x4(u0, u1, 0xDD));
}

/* y[i0..i0+3][j0..j0+3] of y = x w^T (+ bias, relu); rows/cols past b/out are clamped and
 * not stored. Lane 4i+j of the folded vector is output (i0+i, j0+j). */
static void fwd_block(int b, int in, int out, int i0, int j0, const float *x, const float *w,
                      const float *bias, int relu, float *y)
{
    const float *xr[4], *wr[4];
    for (int i = 0; i < 4; i++) {
        xr[i] = x + (size_t)(i0 + i < b ? i0 + i : b - 1) * in;
        wr[i] = w + (size_t)(j0 + i < out ? j0 + i : out - 1) * in;
    }
    __m512 acc[16];
    for (int q = 0; q < 16; q++)
        acc[q] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= in; k += 16) {
        __m512 xv[4], wv[4];
        for (int i = 0; i < 4; i++) {
            xv[i] = _mm512_loadu_ps(xr[i] + k);
            wv[i] = _mm512_loadu_ps(wr[i] + k);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                acc[4 * i + j] = _mm512_fmadd_ps(xv[i], wv[j], acc[4 * i + j]);
    }
    if (k < in) {
        const __mmask16 km = lanes(in - k);
        __m512 xv[4], wv[4];
        for (int i = 0; i < 4; i++) {
            xv[i] = _mm512_maskz_loadu_ps(km, xr[i] + k);
            wv[i] = _mm512_maskz_loadu_ps(km, wr[i] + k);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                acc[4 * i + j] = _mm512_fmadd_ps(xv[i], wv[j], acc[4 * i + j]);
    }
    __m512 r = fold16(acc);
    const __mmask8 cm = (__mmask8)lanes(out - j0 < 4 ? out - j0 : 4);
    if (bias)
        r = _mm512_add_ps(r, _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(cm, bias + j0)));
    if (relu)
        r = _mm512_max_ps(r, _mm512_setzero_ps());
    float *yr = y + (size_t)i0 * out + j0;
    _mm_mask_storeu_ps(yr, cm, _mm512_castps512_ps128(r));
    if (i0 + 1 < b)
        _mm_mask_storeu_ps(yr + out, cm, _mm512_extractf32x4_ps(r, 1));
    if (i0 + 2 < b)
        _mm_mask_storeu_ps(yr + 2 * (size_t)out, cm, _mm512_extractf32x4_ps(r, 2));
    if (i0 + 3 < b)
        _mm_mask_storeu_ps(yr + 3 * (size_t)out, cm, _mm512_extractf32x4_ps(r, 3));
}

void tn_dense_forward(int b, int in, int out, const float *x, const float *w, const float *bias,
                      int relu, float *y)
{
    if (b <= 0 || out <= 0)
        return;
    for (int i0 = 0; i0 < b; i0 += 4)
        for (int j0 = 0; j0 < out; j0 += 4)
            fwd_block(b, in, out, i0, j0, x, w, bias, relu, y);
}

/* C[i0..i0+3][n0..] (=, or += when acc) sum_k A(i,k) B[k][n0..], A(i,k) = A[i·sai + k·sak],
 * NV vectors of B per row (the last one masked by lm); rows past m are clamped, not stored.
 * mask_src (same layout as C) zeroes C where mask_src <= 0 (a ReLU's backward); bias (per
 * column) and relu finish a forward. */
AI void bc_block(const int NV, int m, int K, int i0, const float *A, size_t sai, size_t sak,
                 const float *B, size_t ldb, float *C, size_t ldc, __mmask16 lm, int acc_c,
                 const float *mask_src, const float *bias, int relu)
{
    const float *ar[4];
    for (int i = 0; i < 4; i++)
        ar[i] = A + (size_t)(i0 + i < m ? i0 + i : m - 1) * sai;
    __m512 acc[4][6];
    for (int i = 0; i < 4; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *bk = B + (size_t)k * ldb;
        __m512 bv[6];
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++)
            bv[v] = v < NV - 1 ? _mm512_loadu_ps(bk + 16 * v) : _mm512_maskz_loadu_ps(lm, bk + 16 * v);
        for (int i = 0; i < 4; i++) {
            const __m512 a = _mm512_set1_ps(ar[i][(size_t)k * sak]);
            for (int v = 0; v < NV; v++)
                acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (i0 + i >= m) /* (a test, not a loop bound: acc stays in registers) */
            continue;
        float *cr = C + (size_t)(i0 + i) * ldc;
        const float *mr = mask_src ? mask_src + (size_t)(i0 + i) * ldc : NULL;
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) {
            const __mmask16 sm = v < NV - 1 ? 0xFFFF : lm;
            __m512 r = acc[i][v];
            if (acc_c)
                r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(sm, cr + 16 * v));
            if (bias)
                r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(sm, bias + 16 * v));
            if (relu)
                r = _mm512_max_ps(r, _mm512_setzero_ps());
            if (mr)
                r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(sm, mr + 16 * v),
                                                           _mm512_setzero_ps(), _CMP_GT_OQ),
                                        r);
            _mm512_mask_storeu_ps(cr + 16 * v, sm, r);
        }
    }
}

/* C (m,n) (=, or += when acc_c) A·B over K with A(i,k) = A[i·sai + k·sak], B (K,n) rows ldb. */
static void bc_gemm(int m, int n, int K, const float *A, size_t sai, size_t sak, const float *B,
                    size_t ldb, float *C, size_t ldc, int acc_c, const float *mask_src,
                    const float *bias, int relu)
{
    for (int n0 = 0; n0 < n; n0 += 96) {
        const int nv = (n - n0 + 15) / 16 < 6 ? (n - n0 + 15) / 16 : 6;
        const __mmask16 lm = lanes(n - n0 - 16 * (nv - 1));
        const float *Bn = B + n0;
        float *Cn = C + n0;
        const float *Mn = mask_src ? mask_src + n0 : NULL, *bn = bias ? bias + n0 : NULL;
        for (int i0 = 0; i0 < m; i0 += 4) {
            switch (nv) {
            case 1: bc_block(1, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            case 2: bc_block(2, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            case 3: bc_block(3, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            case 4: bc_block(4, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            case 5: bc_block(5, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            default: bc_block(6, m, K, i0, A, sai, sak, Bn, ldb, Cn, ldc, lm, acc_c, Mn, bn, relu); break;
            }
        }
    }
}

void tn_dense_forward_t(int b, int in, int out, const float *x, const float *wt,
                        const float *bias, int relu, float *y)
{
    if (b <= 0 || out <= 0)
        return;
    /* y (b,out) = x · wt: rows n, A(n,k) = x[n·in + k], B = wt (in,out) */
    bc_gemm(b, out, in, x, (size_t)in, 1, wt, (size_t)out, y, (size_t)out, 0, NULL, bias, relu);
}

void tn_transpose(int rows, int cols, const float *src, float *dst)
{
    /* 16×16 tiles: rows of the tile are loaded (masked at the edges), transposed in
     * registers, and stored as rows of dst */
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16) {
            const int nr = rows - r0 < 16 ? rows - r0 : 16, nc = cols - c0 < 16 ? cols - c0 : 16;
            __m512 t[16];
            for (int i = 0; i < 16; i++)
                t[i] = i < nr ? _mm512_maskz_loadu_ps(lanes(nc), src + (size_t)(r0 + i) * cols + c0)
                              : _mm512_setzero_ps();
            tr16(t);
            for (int j = 0; j < nc; j++)
                _mm512_mask_storeu_ps(dst + (size_t)(c0 + j) * rows + r0, lanes(nr), t[j]);
        }
}

void tn_dense_backward(int b, int in, int out, const float *x, const float *w, const float *dy,
                       float *dx, int relu_in, float *dw, float *db)
{
    if (b <= 0 || out <= 0 || in <= 0) {
        if (dx && b > 0 && in > 0)
            memset(dx, 0, sizeof(float) * (size_t)b * in);
        return;
    }
    /* dw (out,in) += dy^T x: rows o, A(o,n) = dy[n·out + o] */
    bc_gemm(out, in, b, dy, 1, (size_t)out, x, (size_t)in, dw, (size_t)in, 1, NULL, NULL, 0);
    if (db)
        for (int o0 = 0; o0 < out; o0 += 16) {
            const __mmask16 om = lanes(out - o0);
            __m512 s = _mm512_setzero_ps();
            for (int n = 0; n < b; n++)
                s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(om, dy + (size_t)n * out + o0));
            _mm512_mask_storeu_ps(db + o0, om, _mm512_add_ps(s, _mm512_maskz_loadu_ps(om, db + o0)));
        }
    /* dx (b,in) = dy w: rows n, A(n,o) = dy[n·out + o], B = w (out,in) */
    if (dx)
        bc_gemm(b, in, out, dy, (size_t)out, 1, w, (size_t)in, dx, (size_t)in, 0,
                relu_in ? x : NULL, NULL, 0);
}

#else /* portable path: the CBLAS */

void tn_dense_forward_t(int b, int in, int out, const float *x, const float *wt,
                        const float *bias, int relu, float *y)
{
    tn_gemm(0, 0, b, out, in, 1.0f, x, in, wt, out, 0.0f, y, out);
    for (int n = 0; n < b; n++)
        for (int o = 0; o < out; o++) {
            float v = y[(size_t)n * out + o] + (bias ? bias[o] : 0.0f);
            y[(size_t)n * out + o] = relu && !(v > 0.0f) ? 0.0f : v;
        }
}

void tn_transpose(int rows, int cols, const float *src, float *dst)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

void tn_dense_forward(int b, int in, int out, const float *x, const float *w, const float *bias,
                      int relu, float *y)
{
    tn_gemm(0, 1, b, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    for (int n = 0; n < b; n++)
        for (int o = 0; o < out; o++) {
            float v = y[(size_t)n * out + o] + (bias ? bias[o] : 0.0f);
            y[(size_t)n * out + o] = relu && !(v > 0.0f) ? 0.0f : v;
        }
}

void tn_dense_backward(int b, int in, int out, const float *x, const float *w, const float *dy,
                       float *dx, int relu_in, float *dw, float *db)
{
    tn_gemm(1, 0, out, in, b, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db)
        for (int n = 0; n < b; n++)
            for (int o = 0; o < out; o++)
                db[o] += dy[(size_t)n * out + o];
    if (dx) {
        tn_gemm(0, 0, b, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
        if (relu_in)
            for (size_t i = 0; i < (size_t)b * in; i++)
                if (!(x[i] > 0.0f))
                    dx[i] = 0.0f;
    }
}

#endif
