/* test_kernels.c — tests for tensor/kernels: every optimised kernel against its scalar _ref
 * twin on random inputs over many shapes (batch 1/3/10, stride 1/2, padding 0/1/2, odd
 * sizes, 1x1 and even kernels, pools 2x2/s2 and 3x3/s2 with padding), the kernel contracts
 * (weight gradients accumulate, input gradients are overwritten, NULL dx/bias, exact scratch
 * size), softmax cross-entropy and dropout by hand, and the PyTorch layer fixtures with the
 * tolerances of tests/fixtures/README.md.
 */
#include "../test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/fixtures.h"
#include "core/rng.h"
#include "tensor/kernels.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static float *rnd(af_rng *r, size_t n, float lo, float hi)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * (float)af_rng_uniform(r);
    return p;
}

static float *filled(size_t n, float v)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

static float *dup(const float *a, size_t n)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    memcpy(p, a, sizeof(float) * n);
    return p;
}

/* Tolerance for a float32 result that is a sum of `terms` products, compared with a
 * reference summed in another order: relative 1e-4 plus an absolute part that grows like the
 * rounding error of a sequential float sum (~ terms·2^-24·magnitude, kept 10× above it). */
static double sum_atol(double maxabs, double terms)
{
    double scale = maxabs > 1.0 ? maxabs : 1.0;
    double grow = terms / 1000.0 > 1.0 ? terms / 1000.0 : 1.0;
    return 1e-5 * scale * grow;
}

/* ---- GEMM ------------------------------------------------------------------------------ */

TEST(kernels_gemm_all_transposes_vs_ref)
{
    static const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 9, 33}, {64, 10, 120},
                                    {10, 120, 192}, {5, 300, 2}, {1, 37, 150}};
    static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-2.0f, -0.5f}};
    af_rng r;
    af_rng_seed(&r, 1, 0);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (size_t q = 0; q < sizeof ab / sizeof *ab; q++) {
                    const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    /* leading dimensions with padding, so lda/ldb/ldc are really used */
                    const int lda = (tA ? M : K) + 3, ldb = (tB ? K : N) + 1, ldc = N + 2;
                    const size_t na = (size_t)(tA ? K : M) * lda, nb = (size_t)(tB ? N : K) * ldb;
                    float *A = rnd(&r, na, -1, 1), *B = rnd(&r, nb, -1, 1);
                    float *C0 = rnd(&r, (size_t)M * ldc, -1, 1);
                    if (ab[q][1] == 0.0f) /* beta = 0: C must not be read (NaN stays unread) */
                        for (int i = 0; i < M; i++)
                            for (int j = 0; j < N; j++)
                                C0[i * ldc + j] = NAN;
                    float *C = dup(C0, (size_t)M * ldc), *R = dup(C0, (size_t)M * ldc);
                    tn_gemm(tA, tB, M, N, K, ab[q][0], A, lda, B, ldb, ab[q][1], C, ldc);
                    tn_gemm_ref(tA, tB, M, N, K, ab[q][0], A, lda, B, ldb, ab[q][1], R, ldc);
                    size_t bad = t_allclose(C, R, (size_t)M * ldc, 1e-5, 1e-5 * (1 + K / 100.0));
                    int pad_kept = 1; /* the padding columns of C are untouched */
                    for (int i = 0; i < M; i++)
                        for (int j = N; j < ldc; j++)
                            pad_kept &= memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) == 0;
                    free(A), free(B), free(C0), free(C), free(R);
                    CHECK_MSG(bad == (size_t)-1, "gemm tA=%d tB=%d M=%d N=%d K=%d alpha=%g beta=%g: "
                              "element %zu differs", tA, tB, M, N, K, ab[q][0], ab[q][1], bad);
                    CHECK_MSG(pad_kept, "gemm wrote outside the M x N block of C");
                }
}

TEST(kernels_gemm_k0_scales_c)
{
    float A[1] = {0}, B[1] = {0}, C[6] = {1, 2, 3, 4, 5, 6}, R[6];
    memcpy(R, C, sizeof C);
    tn_gemm(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.5f, C, 3);
    tn_gemm_ref(0, 0, 2, 3, 0, 1.0f, A, 1, B, 3, 0.5f, R, 3);
    for (int i = 0; i < 6; i++) {
        CHECK_NEAR(C[i], 0.5f * (float)(i + 1), 0);
        CHECK(C[i] == R[i]);
    }
}

/* ---- convolution ----------------------------------------------------------------------- */

typedef struct conv_case {
    int b, c, h, w, oc, k, stride, pad;
} conv_case;

static const conv_case conv_cases[] = {
    {1, 1, 28, 28, 6, 5, 1, 0},  /* tutorial conv1 */
    {10, 1, 28, 28, 6, 5, 1, 0}, /* several im2col chunks, the last one partial */
    {3, 6, 12, 12, 12, 5, 1, 0}, /* tutorial conv2 */
    {3, 3, 9, 8, 4, 3, 1, 1},    /* the layer_conv2d fixture's shape */
    {2, 2, 11, 10, 3, 3, 2, 0},  /* the layer_conv2d_s2 fixture's shape */
    {3, 2, 7, 9, 5, 3, 2, 1},    /* odd sizes, stride 2, padding 1 */
    {1, 3, 6, 5, 2, 5, 1, 2},    /* padding 2 */
    {10, 4, 5, 5, 3, 1, 1, 0},   /* 1x1 kernel */
    {3, 2, 13, 11, 4, 4, 2, 2},  /* even kernel, stride 2, padding 2 */
    {1, 1, 3, 3, 1, 3, 1, 0},    /* a single output pixel */
    {10, 3, 16, 15, 8, 3, 2, 1}, /* batch 10, stride 2 */
    {3, 5, 4, 4, 7, 3, 1, 2},    /* padding larger than needed: output bigger than input */
};

/* One conv case: forward, backward (with and without dx) vs the reference. */
static int conv_case_ok(const conv_case *cc, af_rng *r)
{
    tn_conv2d s = {.c = cc->c, .h = cc->h, .w = cc->w, .oc = cc->oc, .kh = cc->k, .kw = cc->k,
                   .stride = cc->stride, .pad = cc->pad};
    if (tn_conv2d_geometry(&s) != 0) {
        printf("    geometry rejected a valid case\n");
        return 0;
    }
    const int oh = (cc->h + 2 * cc->pad - cc->k) / cc->stride + 1;
    const int ow = (cc->w + 2 * cc->pad - cc->k) / cc->stride + 1;
    if (s.oh != oh || s.ow != ow) {
        printf("    geometry %dx%d, want %dx%d\n", s.oh, s.ow, oh, ow);
        return 0;
    }
    const size_t nx = (size_t)cc->b * cc->c * cc->h * cc->w, nw = (size_t)cc->oc * cc->c * cc->k * cc->k;
    const size_t ny = (size_t)cc->b * cc->oc * oh * ow;
    const double kterms = (double)cc->c * cc->k * cc->k, wterms = (double)cc->b * oh * ow;
    size_t nscr = tn_conv2d_scratch(&s, cc->b);
    float *x = rnd(r, nx, -1, 1), *w = rnd(r, nw, -0.5f, 0.5f), *bias = rnd(r, cc->oc, -1, 1);
    float *dy = rnd(r, ny, -1, 1), *scr = malloc(sizeof(float) * (nscr ? nscr : 1));
    float *y = filled(ny, NAN), *yr = filled(ny, NAN), *y0 = filled(ny, NAN);
    float *dw0 = rnd(r, nw, -1, 1), *db0 = rnd(r, cc->oc, -1, 1);
    float *dw = dup(dw0, nw), *db = dup(db0, cc->oc), *dwr = dup(dw0, nw), *dbr = dup(db0, cc->oc);
    float *dw2 = dup(dw0, nw), *db2 = dup(db0, cc->oc);
    float *dx = filled(nx, NAN), *dxr = filled(nx, NAN);
    int ok = 1;
    size_t bad;

    tn_conv2d_forward(&s, cc->b, x, w, bias, y, scr);
    tn_conv2d_forward_ref(&s, cc->b, x, w, bias, yr);
    if ((bad = t_allclose(y, yr, ny, 1e-4, sum_atol(fx_maxabs(yr, ny), kterms))) != (size_t)-1) {
        printf("    forward y[%zu] = %.9g, ref %.9g\n", bad, y[bad], yr[bad]);
        ok = 0;
    }
    /* no bias: the same minus the bias */
    tn_conv2d_forward(&s, cc->b, x, w, NULL, y0, scr);
    for (size_t i = 0; ok && i < ny; i++) {
        int o = (int)(i / ((size_t)oh * ow) % cc->oc);
        if (!(fabsf(y0[i] + bias[o] - y[i]) <= 1e-5f * (1.0f + fabsf(y[i])))) {
            printf("    forward without bias at %zu: %.9g + %.9g != %.9g\n", i, y0[i], bias[o], y[i]);
            ok = 0;
        }
    }

    tn_conv2d_backward(&s, cc->b, x, w, dy, dx, dw, db, scr);
    tn_conv2d_backward_ref(&s, cc->b, x, w, dy, dxr, dwr, dbr);
    if (ok && (bad = t_allclose(dx, dxr, nx, 1e-4, sum_atol(fx_maxabs(dxr, nx), (double)cc->oc * cc->k * cc->k))) != (size_t)-1) {
        printf("    dx[%zu] = %.9g, ref %.9g\n", bad, dx[bad], dxr[bad]);
        ok = 0;
    }
    /* dw and db started from dw0/db0: accumulation (+=) is part of the contract */
    if (ok && (bad = t_allclose(dw, dwr, nw, 1e-4, sum_atol(fx_maxabs(dwr, nw), wterms))) != (size_t)-1) {
        printf("    dw[%zu] = %.9g, ref %.9g (started at %.9g)\n", bad, dw[bad], dwr[bad], dw0[bad]);
        ok = 0;
    }
    if (ok && (bad = t_allclose(db, dbr, cc->oc, 1e-4, sum_atol(fx_maxabs(dbr, cc->oc), wterms))) != (size_t)-1) {
        printf("    db[%zu] = %.9g, ref %.9g\n", bad, db[bad], dbr[bad]);
        ok = 0;
    }
    /* dx = NULL (first layer) must give the same weight gradients */
    tn_conv2d_backward(&s, cc->b, x, w, dy, NULL, dw2, db2, scr);
    if (ok && (memcmp(dw2, dw, sizeof(float) * nw) != 0 || memcmp(db2, db, sizeof(float) * cc->oc) != 0)) {
        /* allowed to differ only by rounding */
        if (t_allclose(dw2, dw, nw, 1e-5, sum_atol(fx_maxabs(dw, nw), wterms) * 0.1) != (size_t)-1 ||
            t_allclose(db2, db, cc->oc, 1e-5, 1e-5) != (size_t)-1) {
            printf("    backward with dx = NULL changed dw/db\n");
            ok = 0;
        }
    }
    /* db = NULL: dw still right */
    memcpy(dw2, dw0, sizeof(float) * nw);
    tn_conv2d_backward(&s, cc->b, x, w, dy, NULL, dw2, NULL, scr);
    if (ok && t_allclose(dw2, dwr, nw, 1e-4, sum_atol(fx_maxabs(dwr, nw), wterms)) != (size_t)-1) {
        printf("    backward with db = NULL changed dw\n");
        ok = 0;
    }
    free(x), free(w), free(bias), free(dy), free(scr), free(y), free(yr), free(y0);
    free(dw0), free(db0), free(dw), free(db), free(dwr), free(dbr), free(dw2), free(db2);
    free(dx), free(dxr);
    return ok;
}

TEST(kernels_conv2d_vs_ref)
{
    af_rng r;
    af_rng_seed(&r, 2, 0);
    for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++) {
        const conv_case *c = &conv_cases[i];
        CHECK_MSG(conv_case_ok(c, &r), "conv b=%d c=%d %dx%d oc=%d k=%d stride=%d pad=%d", c->b,
                  c->c, c->h, c->w, c->oc, c->k, c->stride, c->pad);
    }
}

TEST(kernels_conv2d_geometry)
{
    tn_conv2d s = {.c = 1, .h = 28, .w = 28, .oc = 6, .kh = 5, .kw = 5, .stride = 1, .pad = 0};
    CHECK_EQ_INT(tn_conv2d_geometry(&s), 0);
    CHECK_EQ_INT(s.oh, 24);
    CHECK_EQ_INT(s.ow, 24);
    s = (tn_conv2d){.c = 2, .h = 11, .w = 10, .oc = 3, .kh = 3, .kw = 3, .stride = 2, .pad = 0};
    CHECK_EQ_INT(tn_conv2d_geometry(&s), 0);
    CHECK_EQ_INT(s.oh, 5); /* floor((11-3)/2)+1 */
    CHECK_EQ_INT(s.ow, 4);
    s = (tn_conv2d){.c = 1, .h = 4, .w = 4, .oc = 1, .kh = 5, .kw = 5, .stride = 1, .pad = 0};
    CHECK_EQ_INT(tn_conv2d_geometry(&s), -1); /* kernel larger than the input */
    s.pad = 1;
    CHECK_EQ_INT(tn_conv2d_geometry(&s), 0); /* fits once padded */
    CHECK_EQ_INT(s.oh, 2);
    s.stride = 0;
    CHECK_EQ_INT(tn_conv2d_geometry(&s), -1);
    s.stride = 1;
    s.pad = -1;
    CHECK_EQ_INT(tn_conv2d_geometry(&s), -1);
    s.pad = 0;
    s.c = 0;
    CHECK_EQ_INT(tn_conv2d_geometry(&s), -1);
}

/* ---- max-pool -------------------------------------------------------------------------- */

typedef struct pool_case {
    int b, c, h, w, k, stride, pad;
} pool_case;

static const pool_case pool_cases[] = {
    {2, 3, 8, 6, 2, 2, 0},   {1, 2, 7, 5, 2, 2, 0},   {3, 6, 24, 24, 2, 2, 0},
    {10, 12, 8, 8, 2, 2, 0}, {2, 3, 9, 9, 3, 2, 1},   {1, 2, 8, 7, 3, 2, 1},
    {3, 1, 5, 5, 3, 3, 0},   {2, 2, 6, 6, 2, 1, 0},   {1, 1, 1, 1, 1, 1, 0},
    {10, 4, 11, 13, 3, 2, 1}, {3, 2, 5, 4, 2, 2, 1},  {1, 3, 3, 3, 3, 1, 1},
};

/* Reference backward: dx = 0, then dx[arg] += dy, per plane. */
static void pool_backward_by_hand(const tn_conv2d *s, int b, const float *dy, const uint32_t *arg,
                                  float *dx)
{
    const size_t in = (size_t)s->h * s->w, out = (size_t)s->oh * s->ow;
    memset(dx, 0, sizeof(float) * in * s->c * b);
    for (size_t p = 0; p < (size_t)b * s->c; p++)
        for (size_t o = 0; o < out; o++)
            dx[p * in + arg[p * out + o]] += dy[p * out + o];
}

static int pool_case_ok(const pool_case *pc, af_rng *r, int ties)
{
    tn_conv2d s = {.c = pc->c, .h = pc->h, .w = pc->w, .oc = pc->c, .kh = pc->k, .kw = pc->k,
                   .stride = pc->stride, .pad = pc->pad};
    if (tn_conv2d_geometry(&s) != 0)
        return 0;
    const size_t nx = (size_t)pc->b * pc->c * pc->h * pc->w, ny = (size_t)pc->b * pc->c * s.oh * s.ow;
    float *x = rnd(r, nx, -2, 2), *y = filled(ny, NAN), *yr = filled(ny, NAN);
    if (ties) /* few distinct values: many windows hold equal maxima, the first must win */
        for (size_t i = 0; i < nx; i++)
            x[i] = floorf(x[i]);
    uint32_t *arg = malloc(sizeof(uint32_t) * ny), *argr = malloc(sizeof(uint32_t) * ny);
    float *dy = rnd(r, ny, -1, 1), *dx = filled(nx, NAN), *dxr = filled(nx, NAN);
    int ok = 1;
    tn_maxpool2d_forward(&s, pc->b, x, y, arg);
    tn_maxpool2d_forward_ref(&s, pc->b, x, yr, argr);
    for (size_t i = 0; ok && i < ny; i++) {
        if (memcmp(&y[i], &yr[i], 4) != 0 || arg[i] != argr[i]) {
            printf("    y[%zu] = %g (arg %u), ref %g (arg %u)\n", i, y[i], arg[i], yr[i], argr[i]);
            ok = 0;
        }
        /* the arg is inside the plane and holds the max */
        const size_t plane = i / ((size_t)s.oh * s.ow);
        if (ok && (argr[i] >= (uint32_t)(pc->h * pc->w) ||
                   x[plane * pc->h * pc->w + argr[i]] != yr[i])) {
            printf("    ref arg %u at %zu does not point at the max\n", argr[i], i);
            ok = 0;
        }
    }
    tn_maxpool2d_backward(&s, pc->b, dy, arg, dx);
    pool_backward_by_hand(&s, pc->b, dy, argr, dxr);
    if (ok && memcmp(dx, dxr, sizeof(float) * nx) != 0) {
        printf("    backward differs from dx = 0; dx[arg] += dy\n");
        ok = 0;
    }
    free(x), free(y), free(yr), free(arg), free(argr), free(dy), free(dx), free(dxr);
    return ok;
}

TEST(kernels_maxpool2d_vs_ref_exact)
{
    af_rng r;
    af_rng_seed(&r, 3, 0);
    for (int ties = 0; ties < 2; ties++)
        for (size_t i = 0; i < sizeof pool_cases / sizeof *pool_cases; i++) {
            const pool_case *p = &pool_cases[i];
            CHECK_MSG(pool_case_ok(p, &r, ties), "maxpool b=%d c=%d %dx%d k=%d stride=%d pad=%d%s",
                      p->b, p->c, p->h, p->w, p->k, p->stride, p->pad, ties ? " (ties)" : "");
        }
}

TEST(kernels_maxpool2d_first_max_wins)
{
    /* a constant plane: every window is a tie, PyTorch picks its first element (row-major) */
    tn_conv2d s = {.c = 1, .h = 4, .w = 4, .oc = 1, .kh = 2, .kw = 2, .stride = 2, .pad = 0};
    CHECK_EQ_INT(tn_conv2d_geometry(&s), 0);
    float x[16], y[4];
    uint32_t arg[4];
    for (int i = 0; i < 16; i++)
        x[i] = 0.5f;
    tn_maxpool2d_forward(&s, 1, x, y, arg);
    CHECK_EQ_INT(arg[0], 0);
    CHECK_EQ_INT(arg[1], 2);
    CHECK_EQ_INT(arg[2], 8);
    CHECK_EQ_INT(arg[3], 10);
    /* the second of two equal maxima in a window loses: x[1] == x[4] == 3 in the first window */
    x[1] = 3.0f;
    x[5] = 3.0f;
    tn_maxpool2d_forward(&s, 1, x, y, arg);
    CHECK_EQ_INT(arg[0], 1);
    CHECK(y[0] == 3.0f);
    /* all-negative window with padding: padding never wins (PyTorch pads with -inf) */
    tn_conv2d p = {.c = 1, .h = 2, .w = 2, .oc = 1, .kh = 3, .kw = 3, .stride = 2, .pad = 1};
    CHECK_EQ_INT(tn_conv2d_geometry(&p), 0);
    float xn[4] = {-4, -3, -2, -5}, yn[1];
    uint32_t an[1];
    CHECK_EQ_INT(p.oh * p.ow, 1);
    tn_maxpool2d_forward(&p, 1, xn, yn, an);
    CHECK(yn[0] == -2.0f);
    CHECK_EQ_INT(an[0], 2);
}

/* ---- ReLU, linear ---------------------------------------------------------------------- */

TEST(kernels_relu_forward_backward)
{
    af_rng r;
    af_rng_seed(&r, 4, 0);
    const size_t n = 1001;
    float *x = rnd(&r, n, -1, 1), *y = filled(n, NAN), *dy = rnd(&r, n, -1, 1), *dx = filled(n, NAN);
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = 1e-30f;
    tn_relu_forward(n, x, y);
    tn_relu_backward(n, y, dy, dx);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        float want = x[i] > 0.0f ? x[i] : 0.0f;
        ok &= y[i] == want;
        ok &= dx[i] == (x[i] > 0.0f ? dy[i] : 0.0f);
    }
    CHECK(ok);
    CHECK(dx[0] == 0.0f && dx[2] == dy[2]); /* the gradient at 0 is 0, as in PyTorch */
    /* in place */
    float *z = dup(x, n);
    tn_relu_forward(n, z, z);
    CHECK(memcmp(z, y, sizeof(float) * n) == 0);
    free(x), free(y), free(dy), free(dx), free(z);
}

TEST(kernels_linear_vs_ref)
{
    static const int cases[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 7, 5}, {10, 192, 120}, {10, 120, 60},
                                   {3, 60, 10}, {100, 192, 120}, {4, 33, 17}, {2, 5, 70}};
    af_rng r;
    af_rng_seed(&r, 5, 0);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const int b = cases[c][0], in = cases[c][1], out = cases[c][2];
            const size_t nx = (size_t)b * in, nw = (size_t)out * in, ny = (size_t)b * out;
            float *x = rnd(&r, nx, -1, 1), *w = rnd(&r, nw, -0.5f, 0.5f), *bias = rnd(&r, out, -1, 1);
            float *y = filled(ny, NAN), *yr = filled(ny, NAN), *dy = rnd(&r, ny, -1, 1);
            float *dw0 = rnd(&r, nw, -1, 1), *db0 = rnd(&r, out, -1, 1);
            float *dw = dup(dw0, nw), *dwr = dup(dw0, nw), *db = dup(db0, out), *dbr = dup(db0, out);
            float *dx = filled(nx, NAN), *dxr = filled(nx, NAN), *dw2 = dup(dw0, nw);
            const float *bp = with_bias ? bias : NULL;
            tn_linear_forward(b, in, out, x, w, bp, y);
            tn_linear_forward_ref(b, in, out, x, w, bp, yr);
            tn_linear_backward(b, in, out, x, w, dy, dx, dw, with_bias ? db : NULL);
            tn_linear_backward_ref(b, in, out, x, w, dy, dxr, dwr, with_bias ? dbr : NULL);
            tn_linear_backward(b, in, out, x, w, dy, NULL, dw2, NULL);
            size_t by = t_allclose(y, yr, ny, 1e-4, sum_atol(fx_maxabs(yr, ny), in));
            size_t bx = t_allclose(dx, dxr, nx, 1e-4, sum_atol(fx_maxabs(dxr, nx), out));
            size_t bw = t_allclose(dw, dwr, nw, 1e-4, sum_atol(fx_maxabs(dwr, nw), b));
            size_t bw2 = t_allclose(dw2, dwr, nw, 1e-4, sum_atol(fx_maxabs(dwr, nw), b));
            size_t bb = t_allclose(db, dbr, out, 1e-4, sum_atol(fx_maxabs(dbr, out), b));
            int db_untouched = with_bias || memcmp(db, db0, sizeof(float) * out) == 0;
            free(x), free(w), free(bias), free(y), free(yr), free(dy), free(dw0), free(db0);
            free(dw), free(dwr), free(db), free(dbr), free(dx), free(dxr), free(dw2);
            CHECK_MSG(by == (size_t)-1, "linear b=%d in=%d out=%d bias=%d: y[%zu]", b, in, out, with_bias, by);
            CHECK_MSG(bx == (size_t)-1, "linear b=%d in=%d out=%d: dx[%zu]", b, in, out, bx);
            CHECK_MSG(bw == (size_t)-1, "linear b=%d in=%d out=%d: dw[%zu] (accumulated)", b, in, out, bw);
            CHECK_MSG(bw2 == (size_t)-1, "linear b=%d in=%d out=%d: dw[%zu] with dx = NULL", b, in, out, bw2);
            CHECK_MSG(bb == (size_t)-1, "linear b=%d in=%d out=%d: db[%zu]", b, in, out, bb);
            CHECK_MSG(db_untouched, "linear without bias wrote db");
        }
}

/* ---- softmax cross-entropy ------------------------------------------------------------- */

TEST(kernels_softmax_xent_by_hand)
{
    const float z[2 * 3] = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 0.25f};
    const uint8_t y[2] = {2, 1};
    float d[6];
    int correct = -1;
    double loss = tn_softmax_xent(2, 3, z, y, 0.5f, d, &correct);
    /* row 0: lse = log(e^1 + e^2 + e^3); row 1: lse = log(e^0.5 + e^-1 + e^0.25) */
    double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)), l1 = log(exp(0.5) + exp(-1.0) + exp(0.25));
    CHECK_NEAR(loss, (l0 - 3.0) + (l1 + 1.0), 1e-6);
    CHECK_EQ_INT(correct, 1); /* row 0 right (argmax 2), row 1 wrong (argmax 0, label 1) */
    for (int j = 0; j < 3; j++) {
        CHECK_NEAR(d[j], 0.5 * (exp(z[j] - l0) - (j == 2)), 1e-7);
        CHECK_NEAR(d[3 + j], 0.5 * (exp(z[3 + j] - l1) - (j == 1)), 1e-7);
    }
    /* NULL outputs are allowed and do not change the loss */
    CHECK(tn_softmax_xent(2, 3, z, y, 0.5f, NULL, NULL) == loss);
    /* ties in the argmax: the first wins */
    const float t[3] = {2.0f, 2.0f, 1.0f};
    const uint8_t y0[1] = {0}, y1[1] = {1};
    tn_softmax_xent(1, 3, t, y0, 1.0f, NULL, &correct);
    CHECK_EQ_INT(correct, 1);
    tn_softmax_xent(1, 3, t, y1, 1.0f, NULL, &correct);
    CHECK_EQ_INT(correct, 0);
}

TEST(kernels_softmax_xent_stable_for_large_logits)
{
    const float z[2 * 3] = {1000.0f, 0.0f, -1000.0f, -1e4f, -1e4f + 1.0f, -1e4f};
    const uint8_t y[2] = {1, 1};
    float d[6];
    double loss = tn_softmax_xent(2, 3, z, y, 1.0f, d, NULL);
    /* row 0: lse ≈ 1000 so the loss is 1000; row 1: a shifted [0,1,0] */
    double l1 = log(2.0 + exp(1.0)) - 1.0;
    CHECK(isfinite(loss));
    CHECK_NEAR(loss, 1000.0 + l1, 1e-3);
    for (int i = 0; i < 6; i++)
        CHECK(isfinite(d[i]));
    CHECK_NEAR(d[0], 1.0, 1e-6);
    CHECK_NEAR(d[1], -1.0, 1e-6);
    /* each row of the gradient sums to 0 */
    CHECK_NEAR(d[3] + d[4] + d[5], 0.0, 1e-6);
}

/* ---- dropout --------------------------------------------------------------------------- */

TEST(kernels_dropout_rate_scaling_and_seed)
{
    const size_t n = 200000;
    const float p = 0.3f;
    af_rng r;
    af_rng_seed(&r, 6, 0);
    float *x = rnd(&r, n, 0.5f, 1.5f), *y = filled(n, NAN), *dy = rnd(&r, n, -1, 1);
    float *dx = filled(n, NAN), *y2 = filled(n, NAN);
    uint8_t *mask = malloc(n), *mask2 = malloc(n);
    tn_dropout_forward(n, p, x, y, mask, 1234);
    size_t dropped = 0, wrong = 0;
    double sx = 0.0, sy = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (mask[i] > 1)
            wrong++;
        dropped += mask[i] == 0;
        float want = mask[i] ? x[i] / (1.0f - p) : 0.0f;
        if (!(fabsf(y[i] - want) <= 1e-6f * fabsf(want)))
            wrong++;
        sx += x[i];
        sy += y[i];
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_NEAR((double)dropped / n, p, 0.006); /* se 1e-3 */
    CHECK_NEAR(sy / sx, 1.0, 0.01);             /* inverted dropout keeps the expectation */
    tn_dropout_backward(n, p, dy, mask, dx);
    for (size_t i = 0; i < n; i++) {
        float want = mask[i] ? dy[i] / (1.0f - p) : 0.0f;
        if (!(fabsf(dx[i] - want) <= 1e-6f * fabsf(want)))
            wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    /* the same seed gives the same mask, another seed another one */
    tn_dropout_forward(n, p, x, y2, mask2, 1234);
    CHECK(memcmp(mask, mask2, n) == 0 && memcmp(y, y2, sizeof(float) * n) == 0);
    tn_dropout_forward(n, p, x, y2, mask2, 1235);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += mask[i] != mask2[i];
    CHECK_NEAR((double)differ / n, 2 * p * (1 - p), 0.01); /* independent masks differ 42% */
    /* p = 0 keeps everything unscaled */
    tn_dropout_forward(n, 0.0f, x, y2, mask2, 99);
    for (size_t i = 0; i < n; i++)
        if (mask2[i] != 1 || y2[i] != x[i])
            wrong++;
    CHECK_EQ_INT(wrong, 0);
    free(x), free(y), free(dy), free(dx), free(y2), free(mask), free(mask2);
}

/* ---- PyTorch fixtures ------------------------------------------------------------------ */

/* README policy for single layers: rtol 1e-4, atol 1e-5 · max(1, max|b|) of that tensor. */
static size_t layer_close(const float *a, const float *b, size_t n)
{
    double m = fx_maxabs(b, n);
    return t_allclose(a, b, n, 1e-4, 1e-5 * (m > 1.0 ? m : 1.0));
}

static int conv_fixture_ok(const char *file, int use_ref)
{
    st_file f;
    if (fx_open(&f, file))
        return 0;
    int ok = 0;
    const st_tensor *tx = st_find(&f, "x"), *tw = st_find(&f, "weight");
    float *x = NULL, *w = NULL, *bias = NULL, *y = NULL, *dy = NULL, *dx = NULL, *dw = NULL, *db = NULL;
    float *gy = NULL, *gdx = NULL, *gdw = NULL, *gdb = NULL, *scr = NULL;
    if (!tx || !tw || tx->ndim != 4 || tw->ndim != 4) {
        printf("    %s: x or weight missing or not 4-D\n", file);
        goto done;
    }
    const int B = (int)tx->shape[0];
    tn_conv2d s = {.c = (int)tx->shape[1], .h = (int)tx->shape[2], .w = (int)tx->shape[3],
                   .oc = (int)tw->shape[0], .kh = (int)tw->shape[2], .kw = (int)tw->shape[3],
                   .stride = (int)fx_meta_num(&f, "stride"), .pad = (int)fx_meta_num(&f, "padding")};
    if (tn_conv2d_geometry(&s) || (int)fx_meta_num(&f, "kernel") != s.kh ||
        (int)fx_meta_num(&f, "in") != s.c || (int)fx_meta_num(&f, "out") != s.oc) {
        printf("    %s: metadata disagrees with the tensor shapes\n", file);
        goto done;
    }
    size_t nx = (size_t)B * s.c * s.h * s.w, ny = (size_t)B * s.oc * s.oh * s.ow;
    size_t nw = (size_t)s.oc * s.c * s.kh * s.kw;
    x = FX_GET(&f, "x", NULL, 4, B, s.c, s.h, s.w);
    w = FX_GET(&f, "weight", NULL, 4, s.oc, s.c, s.kh, s.kw);
    bias = FX_GET(&f, "bias", NULL, 1, s.oc);
    y = FX_GET(&f, "y", NULL, 4, B, s.oc, s.oh, s.ow);
    dy = FX_GET(&f, "dy", NULL, 4, B, s.oc, s.oh, s.ow);
    dx = FX_GET(&f, "dx", NULL, 4, B, s.c, s.h, s.w);
    dw = FX_GET(&f, "dweight", NULL, 4, s.oc, s.c, s.kh, s.kw);
    db = FX_GET(&f, "dbias", NULL, 1, s.oc);
    if (!x || !w || !bias || !y || !dy || !dx || !dw || !db)
        goto done;
    gy = filled(ny, NAN), gdx = filled(nx, NAN), gdw = filled(nw, 0), gdb = filled(s.oc, 0);
    size_t nscr = tn_conv2d_scratch(&s, B);
    scr = malloc(sizeof(float) * (nscr ? nscr : 1));
    if (use_ref) {
        tn_conv2d_forward_ref(&s, B, x, w, bias, gy);
        tn_conv2d_backward_ref(&s, B, x, w, dy, gdx, gdw, gdb);
    } else {
        tn_conv2d_forward(&s, B, x, w, bias, gy, scr);
        tn_conv2d_backward(&s, B, x, w, dy, gdx, gdw, gdb, scr);
    }
    size_t bad;
    const char *what = use_ref ? "ref" : "optimised";
    if ((bad = layer_close(gy, y, ny)) != (size_t)-1)
        printf("    %s %s: y[%zu] = %.9g, torch %.9g\n", file, what, bad, gy[bad], y[bad]);
    else if ((bad = layer_close(gdx, dx, nx)) != (size_t)-1)
        printf("    %s %s: dx[%zu] = %.9g, torch %.9g\n", file, what, bad, gdx[bad], dx[bad]);
    else if ((bad = layer_close(gdw, dw, nw)) != (size_t)-1)
        printf("    %s %s: dweight[%zu] = %.9g, torch %.9g\n", file, what, bad, gdw[bad], dw[bad]);
    else if ((bad = layer_close(gdb, db, s.oc)) != (size_t)-1)
        printf("    %s %s: dbias[%zu] = %.9g, torch %.9g\n", file, what, bad, gdb[bad], db[bad]);
    else
        ok = 1;
done:
    free(x), free(w), free(bias), free(y), free(dy), free(dx), free(dw), free(db);
    free(gy), free(gdx), free(gdw), free(gdb), free(scr);
    st_free(&f);
    return ok;
}

TEST(kernels_fixture_conv2d)
{
    static const char *files[] = {"layer_conv2d.safetensors", "layer_conv2d_s2.safetensors",
                                  "layer_conv1.safetensors"};
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(conv_fixture_ok(files[i], 0), "%s (optimised kernels)", files[i]);
        CHECK_MSG(conv_fixture_ok(files[i], 1), "%s (reference kernels)", files[i]);
    }
}

static int pool_fixture_ok(const char *file)
{
    st_file f;
    if (fx_open(&f, file))
        return 0;
    int ok = 0;
    const st_tensor *tx = st_find(&f, "x");
    float *x = NULL, *y = NULL, *dy = NULL, *dx = NULL, *gy = NULL, *gyr = NULL, *gdx = NULL;
    uint32_t *arg = NULL, *argr = NULL;
    if (!tx || tx->ndim != 4)
        goto done;
    const int B = (int)tx->shape[0], k = (int)fx_meta_num(&f, "kernel");
    tn_conv2d s = {.c = (int)tx->shape[1], .h = (int)tx->shape[2], .w = (int)tx->shape[3],
                   .oc = (int)tx->shape[1], .kh = k, .kw = k,
                   .stride = (int)fx_meta_num(&f, "stride"), .pad = 0};
    const char *ceil_mode = st_meta(&f, "ceil_mode");
    if (k != 2 || s.stride != 2 || !ceil_mode || strcmp(ceil_mode, "false") != 0 || tn_conv2d_geometry(&s)) {
        printf("    %s: unexpected metadata\n", file);
        goto done;
    }
    size_t nx = (size_t)B * s.c * s.h * s.w, ny = (size_t)B * s.c * s.oh * s.ow;
    x = FX_GET(&f, "x", NULL, 4, B, s.c, s.h, s.w);
    y = FX_GET(&f, "y", NULL, 4, B, s.c, s.oh, s.ow);
    dy = FX_GET(&f, "dy", NULL, 4, B, s.c, s.oh, s.ow);
    dx = FX_GET(&f, "dx", NULL, 4, B, s.c, s.h, s.w);
    if (!x || !y || !dy || !dx)
        goto done;
    gy = filled(ny, NAN), gyr = filled(ny, NAN), gdx = filled(nx, NAN);
    arg = malloc(sizeof(uint32_t) * ny), argr = malloc(sizeof(uint32_t) * ny);
    tn_maxpool2d_forward(&s, B, x, gy, arg);
    tn_maxpool2d_forward_ref(&s, B, x, gyr, argr);
    tn_maxpool2d_backward(&s, B, dy, arg, gdx);
    /* max-pool is exact: same values, same routes */
    if (memcmp(gy, y, sizeof(float) * ny) != 0 || memcmp(gyr, y, sizeof(float) * ny) != 0)
        printf("    %s: y differs from torch\n", file);
    else if (memcmp(gdx, dx, sizeof(float) * nx) != 0)
        printf("    %s: dx differs from torch\n", file);
    else
        ok = 1;
done:
    free(x), free(y), free(dy), free(dx), free(gy), free(gyr), free(gdx), free(arg), free(argr);
    st_free(&f);
    return ok;
}

TEST(kernels_fixture_maxpool2d)
{
    CHECK(pool_fixture_ok("layer_maxpool2d.safetensors"));
    CHECK(pool_fixture_ok("layer_maxpool2d_odd.safetensors"));
}

TEST(kernels_fixture_relu)
{
    st_file f;
    CHECK(fx_open(&f, "layer_relu.safetensors") == 0);
    float *x = FX_GET(&f, "x", NULL, 2, 4, 7), *y = FX_GET(&f, "y", NULL, 2, 4, 7);
    float *dy = FX_GET(&f, "dy", NULL, 2, 4, 7), *dx = FX_GET(&f, "dx", NULL, 2, 4, 7);
    st_free(&f);
    int have = x && y && dy && dx;
    float gy[28], gdx[28];
    if (have) {
        tn_relu_forward(28, x, gy);
        tn_relu_backward(28, gy, dy, gdx);
    }
    int same = have && memcmp(gy, y, sizeof gy) == 0 && memcmp(gdx, dx, sizeof gdx) == 0;
    free(x), free(y), free(dy), free(dx);
    CHECK(have);
    CHECK(same); /* exact */
}

TEST(kernels_fixture_linear)
{
    st_file f;
    CHECK(fx_open(&f, "layer_linear.safetensors") == 0);
    CHECK_EQ_INT((int)fx_meta_num(&f, "in"), 7);
    CHECK_EQ_INT((int)fx_meta_num(&f, "out"), 5);
    float *x = FX_GET(&f, "x", NULL, 2, 3, 7), *w = FX_GET(&f, "weight", NULL, 2, 5, 7);
    float *bias = FX_GET(&f, "bias", NULL, 1, 5), *y = FX_GET(&f, "y", NULL, 2, 3, 5);
    float *dy = FX_GET(&f, "dy", NULL, 2, 3, 5), *dx = FX_GET(&f, "dx", NULL, 2, 3, 7);
    float *dw = FX_GET(&f, "dweight", NULL, 2, 5, 7), *db = FX_GET(&f, "dbias", NULL, 1, 5);
    st_free(&f);
    int have = x && w && bias && y && dy && dx && dw && db;
    size_t bad[2][4];
    for (int ref = 0; have && ref < 2; ref++) {
        float gy[15], gdx[21], gdw[35] = {0}, gdb[5] = {0};
        if (ref) {
            tn_linear_forward_ref(3, 7, 5, x, w, bias, gy);
            tn_linear_backward_ref(3, 7, 5, x, w, dy, gdx, gdw, gdb);
        } else {
            tn_linear_forward(3, 7, 5, x, w, bias, gy);
            tn_linear_backward(3, 7, 5, x, w, dy, gdx, gdw, gdb);
        }
        bad[ref][0] = layer_close(gy, y, 15);
        bad[ref][1] = layer_close(gdx, dx, 21);
        bad[ref][2] = layer_close(gdw, dw, 35);
        bad[ref][3] = layer_close(gdb, db, 5);
    }
    free(x), free(w), free(bias), free(y), free(dy), free(dx), free(dw), free(db);
    CHECK(have);
    for (int ref = 0; ref < 2; ref++)
        for (int k = 0; k < 4; k++)
            CHECK_MSG(bad[ref][k] == (size_t)-1, "%s kernel: %s differs from torch at %zu",
                      ref ? "reference" : "optimised", (const char *[]){"y", "dx", "dweight", "dbias"}[k],
                      bad[ref][k]);
}

TEST(kernels_fixture_softmax_xent)
{
    st_file f;
    CHECK(fx_open(&f, "loss_xent.safetensors") == 0);
    CHECK_EQ_INT((int)fx_meta_num(&f, "classes"), 10);
    float *z = FX_GET(&f, "logits", NULL, 2, 6, 10), *lab = FX_GET(&f, "labels", NULL, 1, 6);
    float *loss = FX_GET(&f, "loss", NULL, 1, 1), *dz = FX_GET(&f, "dlogits", NULL, 2, 6, 10);
    const char *red = st_meta(&f, "reduction");
    int mean = red && strcmp(red, "mean") == 0;
    st_free(&f);
    int have = z && lab && loss && dz;
    uint8_t y[6];
    float g[60] = {0}, l1[1] = {0};
    int labels_ok = have && fx_labels(lab, 6, y) == 0;
    if (labels_ok)
        l1[0] = (float)(tn_softmax_xent(6, 10, z, y, 1.0f / 6.0f, g, NULL) / 6.0);
    size_t bl = labels_ok ? layer_close(l1, loss, 1) : 0, bg = labels_ok ? layer_close(g, dz, 60) : 0;
    float lv = loss ? loss[0] : NAN;
    free(z), free(lab), free(loss), free(dz);
    CHECK(have && labels_ok);
    CHECK(mean);
    CHECK_MSG(bl == (size_t)-1, "loss %.9g, torch %.9g", l1[0], lv);
    CHECK_MSG(bg == (size_t)-1, "dlogits[%zu] differs from torch", bg);
}
