/* kernels.c — the optimised kernels (see kernels.h for shapes and contracts).
 *
 * Convolution is im2col + GEMM over chunks of G samples at once, so the GEMMs are wide
 * (N = G·oh·ow) while the column buffer stays cache-sized. GEMM goes to the CBLAS (BLIS).
 * Linear layers go to the small-GEMM kernels of dense.c; the conv → ReLU → 2x2 pool blocks
 * of small CNNs have fused direct kernels in convpool.c, which the model uses instead of
 * these where the shape allows. Everything here must agree with kernels_ref.c to float32
 * rounding; tests/tensor checks it.
 */
#include "tensor/kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "tensor/dense.h"

void tn_gemm(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, M,
                N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int tn_conv2d_geometry(tn_conv2d *s)
{
    if (s->c <= 0 || s->h <= 0 || s->w <= 0 || s->kh <= 0 || s->kw <= 0 || s->stride <= 0 ||
        s->pad < 0)
        return -1;
    int hh = s->h + 2 * s->pad - s->kh, ww = s->w + 2 * s->pad - s->kw;
    if (hh < 0 || ww < 0)
        return -1;
    s->oh = hh / s->stride + 1;
    s->ow = ww / s->stride + 1;
    return 0;
}

/* Samples per im2col chunk: enough to make the GEMM wide, few enough that the column
 * buffer (K × G·P floats) stays within ~256 KiB (L2). */
static int conv_chunk(const tn_conv2d *s, int b)
{
    size_t k = (size_t)s->c * s->kh * s->kw, p = (size_t)s->oh * s->ow;
    size_t g = (64 * 1024) / (k * p + 1);
    if (g < 1)
        g = 1;
    if (g > (size_t)b)
        g = (size_t)b;
    return (int)g;
}

size_t tn_conv2d_scratch(const tn_conv2d *s, int b)
{
    size_t k = (size_t)s->c * s->kh * s->kw, p = (size_t)s->oh * s->ow;
    size_t g = (size_t)conv_chunk(s, b);
    /* col (k·gp) + dcol (k·gp) + out/dy transposed (oc·gp) */
    return 2 * k * g * p + (size_t)s->oc * g * p;
}

/* col[(c,u,v)][(g,i,j)] = x[g][c][i·stride-pad+u][j·stride-pad+v] (0 outside). */
static void im2col(const tn_conv2d *s, int g, const float *x, float *col)
{
    const int P = s->oh * s->ow, GP = g * P;
    for (int c = 0; c < s->c; c++)
        for (int u = 0; u < s->kh; u++)
            for (int v = 0; v < s->kw; v++) {
                float *row = col + (size_t)((c * s->kh + u) * s->kw + v) * GP;
                for (int n = 0; n < g; n++) {
                    const float *xp = x + ((size_t)n * s->c + c) * s->h * s->w;
                    float *dst = row + (size_t)n * P;
                    for (int i = 0; i < s->oh; i++) {
                        int r = i * s->stride - s->pad + u;
                        float *d = dst + i * s->ow;
                        if (r < 0 || r >= s->h) {
                            memset(d, 0, sizeof(float) * s->ow);
                            continue;
                        }
                        const float *xr = xp + r * s->w;
                        if (s->stride == 1 && s->pad == 0) {
                            memcpy(d, xr + v, sizeof(float) * s->ow);
                            continue;
                        }
                        for (int j = 0; j < s->ow; j++) {
                            int q = j * s->stride - s->pad + v;
                            d[j] = (q >= 0 && q < s->w) ? xr[q] : 0.0f;
                        }
                    }
                }
            }
}

/* dx[g][c][r][q] += col[(c,u,v)][(g,i,j)] — the adjoint of im2col; dx must be zeroed. */
static void col2im(const tn_conv2d *s, int g, const float *col, float *dx)
{
    const int P = s->oh * s->ow, GP = g * P;
    for (int c = 0; c < s->c; c++)
        for (int u = 0; u < s->kh; u++)
            for (int v = 0; v < s->kw; v++) {
                const float *row = col + (size_t)((c * s->kh + u) * s->kw + v) * GP;
                for (int n = 0; n < g; n++) {
                    float *xp = dx + ((size_t)n * s->c + c) * s->h * s->w;
                    const float *src = row + (size_t)n * P;
                    for (int i = 0; i < s->oh; i++) {
                        int r = i * s->stride - s->pad + u;
                        if (r < 0 || r >= s->h)
                            continue;
                        float *xr = xp + r * s->w;
                        const float *sr = src + i * s->ow;
                        for (int j = 0; j < s->ow; j++) {
                            int q = j * s->stride - s->pad + v;
                            if (q >= 0 && q < s->w)
                                xr[q] += sr[j];
                        }
                    }
                }
            }
}

void tn_conv2d_forward(const tn_conv2d *s, int b, const float *x, const float *w,
                       const float *bias, float *y, float *scratch)
{
    const int K = s->c * s->kh * s->kw, P = s->oh * s->ow, G = conv_chunk(s, b);
    const size_t in_n = (size_t)s->c * s->h * s->w, out_n = (size_t)s->oc * P;
    float *col = scratch, *t = scratch + 2 * (size_t)K * G * P;
    for (int n0 = 0; n0 < b; n0 += G) {
        int g = b - n0 < G ? b - n0 : G, GP = g * P;
        im2col(s, g, x + n0 * in_n, col);
        /* t (oc, g·P) = w (oc, K) · col (K, g·P) */
        tn_gemm(0, 0, s->oc, GP, K, 1.0f, w, K, col, GP, 0.0f, t, GP);
        for (int n = 0; n < g; n++)
            for (int o = 0; o < s->oc; o++) {
                float *yo = y + (n0 + n) * out_n + (size_t)o * P;
                const float *to = t + (size_t)o * GP + (size_t)n * P;
                float bo = bias ? bias[o] : 0.0f;
                for (int p = 0; p < P; p++)
                    yo[p] = to[p] + bo;
            }
    }
}

void tn_conv2d_backward(const tn_conv2d *s, int b, const float *x, const float *w,
                        const float *dy, float *dx, float *dw, float *db, float *scratch)
{
    const int K = s->c * s->kh * s->kw, P = s->oh * s->ow, G = conv_chunk(s, b);
    const size_t in_n = (size_t)s->c * s->h * s->w, out_n = (size_t)s->oc * P;
    float *col = scratch, *dcol = scratch + (size_t)K * G * P, *t = dcol + (size_t)K * G * P;
    if (dx)
        memset(dx, 0, sizeof(float) * in_n * b);
    for (int n0 = 0; n0 < b; n0 += G) {
        int g = b - n0 < G ? b - n0 : G, GP = g * P;
        for (int n = 0; n < g; n++)
            for (int o = 0; o < s->oc; o++) {
                const float *src = dy + (n0 + n) * out_n + (size_t)o * P;
                memcpy(t + (size_t)o * GP + (size_t)n * P, src, sizeof(float) * P);
                if (db) {
                    float acc = 0.0f;
                    for (int p = 0; p < P; p++)
                        acc += src[p];
                    db[o] += acc;
                }
            }
        im2col(s, g, x + n0 * in_n, col);
        /* dw (oc, K) += t (oc, g·P) · col^T (g·P, K) */
        tn_gemm(0, 1, s->oc, K, GP, 1.0f, t, GP, col, GP, 1.0f, dw, K);
        if (dx) {
            /* dcol (K, g·P) = w^T (K, oc) · t (oc, g·P) */
            tn_gemm(1, 0, K, GP, s->oc, 1.0f, w, K, t, GP, 0.0f, dcol, GP);
            col2im(s, g, dcol, dx + n0 * in_n);
        }
    }
}

void tn_maxpool2d_forward(const tn_conv2d *s, int b, const float *x, float *y, uint32_t *arg)
{
    if (s->kh == 2 && s->kw == 2 && s->stride == 2 && s->pad == 0) {
        const int H = s->h, W = s->w, OH = s->oh, OW = s->ow;
        for (int n = 0; n < b * s->c; n++) {
            const float *xp = x + (size_t)n * H * W;
            float *yp = y + (size_t)n * OH * OW;
            uint32_t *ap = arg + (size_t)n * OH * OW;
            for (int i = 0; i < OH; i++) {
                const float *r0 = xp + 2 * i * W, *r1 = r0 + W;
                for (int j = 0; j < OW; j++) {
                    int q = 2 * j;
                    float m = r0[q];
                    uint32_t a = (uint32_t)(2 * i * W + q);
                    if (r0[q + 1] > m) { m = r0[q + 1]; a = (uint32_t)(2 * i * W + q + 1); }
                    if (r1[q] > m) { m = r1[q]; a = (uint32_t)((2 * i + 1) * W + q); }
                    if (r1[q + 1] > m) { m = r1[q + 1]; a = (uint32_t)((2 * i + 1) * W + q + 1); }
                    yp[i * OW + j] = m;
                    ap[i * OW + j] = a;
                }
            }
        }
        return;
    }
    tn_maxpool2d_forward_ref(s, b, x, y, arg);
}

void tn_maxpool2d_backward(const tn_conv2d *s, int b, const float *dy, const uint32_t *arg,
                           float *dx)
{
    const size_t in_plane = (size_t)s->h * s->w, out_plane = (size_t)s->oh * s->ow;
    memset(dx, 0, sizeof(float) * in_plane * s->c * b);
    for (size_t n = 0; n < (size_t)b * s->c; n++) {
        float *dp = dx + n * in_plane;
        const float *gp = dy + n * out_plane;
        const uint32_t *ap = arg + n * out_plane;
        for (size_t o = 0; o < out_plane; o++)
            dp[ap[o]] += gp[o];
    }
}

void tn_relu_forward(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tn_relu_backward(size_t n, const float *y, const float *dy, float *dx)
{
    for (size_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void tn_linear_forward(int b, int in, int out, const float *x, const float *w, const float *bias,
                       float *y)
{
    tn_dense_forward(b, in, out, x, w, bias, 0, y);
}

void tn_linear_backward(int b, int in, int out, const float *x, const float *w, const float *dy,
                        float *dx, float *dw, float *db)
{
    tn_dense_backward(b, in, out, x, w, dy, dx, 0, dw, db);
}

double tn_softmax_xent(int b, int k, const float *logits, const uint8_t *labels, float scale,
                       float *dlogits, int *correct)
{
    double total = 0.0;
    int hits = 0;
    for (int n = 0; n < b; n++) {
        const float *z = logits + (size_t)n * k;
        float m = z[0];
        int am = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > m) {
                m = z[j];
                am = j;
            }
        hits += am == labels[n];
        double sum = 0.0;
        for (int j = 0; j < k; j++)
            sum += exp((double)(z[j] - m));
        double lse = m + log(sum);
        total += lse - z[labels[n]];
        if (dlogits) {
            float *d = dlogits + (size_t)n * k;
            for (int j = 0; j < k; j++)
                d[j] = scale * (float)(exp((double)z[j] - lse) - (j == labels[n]));
        }
    }
    if (correct)
        *correct = hits;
    return total;
}

void tn_dropout_forward(size_t n, float p, const float *x, float *y, uint8_t *mask, uint64_t seed)
{
    af_rng rng;
    af_rng_seed(&rng, seed, 0x64726f70);
    float keep = 1.0f - p, inv = keep > 0.0f ? 1.0f / keep : 0.0f;
    uint32_t thresh = (uint32_t)((double)p * 4294967296.0 > 4294967295.0 ? 4294967295.0
                                                                         : (double)p * 4294967296.0);
    for (size_t i = 0; i < n; i++) {
        mask[i] = af_rng_u32(&rng) >= thresh;
        y[i] = mask[i] ? x[i] * inv : 0.0f;
    }
}

void tn_dropout_backward(size_t n, float p, const float *dy, const uint8_t *mask, float *dx)
{
    float keep = 1.0f - p, inv = keep > 0.0f ? 1.0f / keep : 0.0f;
    for (size_t i = 0; i < n; i++)
        dx[i] = mask[i] ? dy[i] * inv : 0.0f;
}
