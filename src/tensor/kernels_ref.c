/* kernels_ref.c — the scalar reference kernels: written for clarity, never for speed.
 * They are the test oracle for the optimised kernels in kernels.c. No BLAS, no SIMD. */
#include "tensor/kernels.h"

#include <string.h>

void tn_gemm_ref(int tA, int tB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int k = 0; k < K; k++) {
                float a = tA ? A[k * lda + i] : A[i * lda + k];
                float b = tB ? B[j * ldb + k] : B[k * ldb + j];
                acc += (double)a * b;
            }
            float c0 = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc) + c0;
        }
}

void tn_conv2d_forward_ref(const tn_conv2d *s, int b, const float *x, const float *w,
                           const float *bias, float *y)
{
    for (int n = 0; n < b; n++)
        for (int o = 0; o < s->oc; o++)
            for (int i = 0; i < s->oh; i++)
                for (int j = 0; j < s->ow; j++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < s->c; c++)
                        for (int u = 0; u < s->kh; u++)
                            for (int v = 0; v < s->kw; v++) {
                                int r = i * s->stride - s->pad + u, q = j * s->stride - s->pad + v;
                                if (r < 0 || r >= s->h || q < 0 || q >= s->w)
                                    continue;
                                acc += (double)x[((n * s->c + c) * s->h + r) * s->w + q] *
                                       w[((o * s->c + c) * s->kh + u) * s->kw + v];
                            }
                    y[((n * s->oc + o) * s->oh + i) * s->ow + j] = (float)acc;
                }
}

void tn_conv2d_backward_ref(const tn_conv2d *s, int b, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db)
{
    if (dx)
        memset(dx, 0, sizeof(float) * (size_t)b * s->c * s->h * s->w);
    for (int n = 0; n < b; n++)
        for (int o = 0; o < s->oc; o++)
            for (int i = 0; i < s->oh; i++)
                for (int j = 0; j < s->ow; j++) {
                    float g = dy[((n * s->oc + o) * s->oh + i) * s->ow + j];
                    if (db)
                        db[o] += g;
                    for (int c = 0; c < s->c; c++)
                        for (int u = 0; u < s->kh; u++)
                            for (int v = 0; v < s->kw; v++) {
                                int r = i * s->stride - s->pad + u, q = j * s->stride - s->pad + v;
                                if (r < 0 || r >= s->h || q < 0 || q >= s->w)
                                    continue;
                                size_t xi = ((size_t)(n * s->c + c) * s->h + r) * s->w + q;
                                size_t wi = ((size_t)(o * s->c + c) * s->kh + u) * s->kw + v;
                                dw[wi] += g * x[xi];
                                if (dx)
                                    dx[xi] += g * w[wi];
                            }
                }
}

void tn_maxpool2d_forward_ref(const tn_conv2d *s, int b, const float *x, float *y, uint32_t *arg)
{
    for (int n = 0; n < b * s->c; n++) {
        const float *xp = x + (size_t)n * s->h * s->w;
        for (int i = 0; i < s->oh; i++)
            for (int j = 0; j < s->ow; j++) {
                float best = 0.0f;
                int bi = -1;
                for (int u = 0; u < s->kh; u++)
                    for (int v = 0; v < s->kw; v++) {
                        int r = i * s->stride - s->pad + u, q = j * s->stride - s->pad + v;
                        if (r < 0 || r >= s->h || q < 0 || q >= s->w)
                            continue;
                        float val = xp[r * s->w + q];
                        if (bi < 0 || val > best) {
                            best = val;
                            bi = r * s->w + q;
                        }
                    }
                size_t o = ((size_t)n * s->oh + i) * s->ow + j;
                y[o] = best;
                arg[o] = (uint32_t)bi;
            }
    }
}

void tn_linear_forward_ref(int b, int in, int out, const float *x, const float *w,
                           const float *bias, float *y)
{
    for (int n = 0; n < b; n++)
        for (int o = 0; o < out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int i = 0; i < in; i++)
                acc += (double)x[n * in + i] * w[o * in + i];
            y[n * out + o] = (float)acc;
        }
}

void tn_linear_backward_ref(int b, int in, int out, const float *x, const float *w,
                            const float *dy, float *dx, float *dw, float *db)
{
    for (int n = 0; n < b; n++)
        for (int o = 0; o < out; o++) {
            float g = dy[n * out + o];
            if (db)
                db[o] += g;
            for (int i = 0; i < in; i++)
                dw[o * in + i] += g * x[n * in + i];
        }
    if (dx)
        for (int n = 0; n < b; n++)
            for (int i = 0; i < in; i++) {
                double acc = 0.0;
                for (int o = 0; o < out; o++)
                    acc += (double)dy[n * out + o] * w[o * in + i];
                dx[n * in + i] = (float)acc;
            }
}
