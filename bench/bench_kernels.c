/* bench_kernels.c — micro-benchmark of the engine's kernels on the tutorial CNN's shapes.
 *
 * A standalone program (not part of `make test`): links build/libartificien.a and prints,
 * per kernel at batch 100 and 10, the time per call and per image and its GFLOP/s; then
 * forward-only inference at batch 1000 over the Fashion-MNIST test set, one training step
 * per phase, train_step on 1 and 2 threads, and the CBLAS sgemm rate at 512^3 (run it with
 * BLIS_ARCH_TYPE=0 (skx), 6 (zen3) or unset to compare BLIS configurations). Kernel times
 * are the best of several runs of thread CPU time (the machines are shared); wall-clock
 * figures are printed beside. `--sgemm` or `--infer` runs only that part.
 *
 *   cc -O3 -march=native -Isrc bench/bench_kernels.c build/libartificien.a \
 *      -lcjson -lz -lblis -lm -pthread -o build/bench_kernels && build/bench_kernels
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mem.h"
#include "core/pool.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "nn/model.h"
#include "nn/optim.h"
#include "tensor/convpool.h"
#include "tensor/dense.h"
#include "tensor/kernels.h"
#include "train/train.h"

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float *rnd(af_rng *g, size_t n, float scale)
{
    float *a = af_alloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        a[i] = (float)((2.0 * af_rng_uniform(g) - 1.0) * scale);
    return a;
}

typedef struct bench_ctx {
    int b;
    tn_convpool *c1, *c2;
    float *x, *w1, *b1, *y1, *w2, *b2, *y2, *f1w, *f1b, *h1, *f2w, *f2b, *h2, *ow, *ob, *z;
    float *dz, *dh2, *dh1, *dy2, *dy1, *g1w, *g1b, *g2w, *g2b, *gf1w, *gf1b, *gf2w, *gf2b;
    float *gow, *gob, *s1, *s2, *wt;
    uint16_t *m1, *m2;
    uint8_t *lab;
} bench_ctx;

enum { K_CONV1_F, K_CONV2_F, K_FC1_F, K_FC2_F, K_OUT_F, K_FC_FT, K_XENT, K_OUT_B, K_FC2_B, K_FC1_B,
       K_CONV2_B, K_CONV1_B, K_N };
static const char *const knames[K_N] = {
    "conv1+relu+pool fwd", "conv2+relu+pool fwd", "fc1+relu fwd (w)", "fc2+relu fwd (w)",
    "out fwd (w)", "fc1,fc2,out fwd (w^T)", "softmax xent", "out bwd", "fc2 bwd (+relu)", "fc1 bwd (+relu)", "conv2 bwd (dW,dx)",
    "conv1 bwd (dW)"};
/* FLOPs per image counted as 2·MACs of the dense computation (pooling sparsity ignored) */
static const double kflops[K_N] = {172800, 230400, 46080, 14400, 1200, 61680, 0, 2400, 28800,
                                   92160, 460800, 172800};

static void run_kernel(bench_ctx *c, int k)
{
    const int b = c->b;
    switch (k) {
    case K_CONV1_F: tn_convpool_forward(c->c1, b, c->x, c->w1, c->b1, c->y1, c->m1, c->s1); break;
    case K_CONV2_F: tn_convpool_forward(c->c2, b, c->y1, c->w2, c->b2, c->y2, c->m2, c->s2); break;
    case K_FC1_F: tn_dense_forward(b, 192, 120, c->y2, c->f1w, c->f1b, 1, c->h1); break;
    case K_FC2_F: tn_dense_forward(b, 120, 60, c->h1, c->f2w, c->f2b, 1, c->h2); break;
    case K_OUT_F: tn_dense_forward(b, 60, 10, c->h2, c->ow, c->ob, 0, c->z); break;
    case K_FC_FT: /* the model's form from batch 8 on: transpose each weight, then lanes = out */
        tn_transpose(120, 192, c->f1w, c->wt);
        tn_dense_forward_t(b, 192, 120, c->y2, c->wt, c->f1b, 1, c->h1);
        tn_transpose(60, 120, c->f2w, c->wt);
        tn_dense_forward_t(b, 120, 60, c->h1, c->wt, c->f2b, 1, c->h2);
        tn_transpose(10, 60, c->ow, c->wt);
        tn_dense_forward_t(b, 60, 10, c->h2, c->wt, c->ob, 0, c->z);
        break;
    case K_XENT: tn_softmax_xent(b, 10, c->z, c->lab, 1.0f / b, c->dz, NULL); break;
    case K_OUT_B: tn_dense_backward(b, 60, 10, c->h2, c->ow, c->dz, c->dh2, 1, c->gow, c->gob); break;
    case K_FC2_B: tn_dense_backward(b, 120, 60, c->h1, c->f2w, c->dh2, c->dh1, 1, c->gf2w, c->gf2b); break;
    case K_FC1_B: tn_dense_backward(b, 192, 120, c->y2, c->f1w, c->dh1, c->dy2, 0, c->gf1w, c->gf1b); break;
    case K_CONV2_B:
        tn_convpool_backward(c->c2, b, c->y1, c->w2, c->dy2, c->m2, c->dy1, c->g2w, c->g2b, c->s2);
        break;
    case K_CONV1_B:
        tn_convpool_backward(c->c1, b, c->x, c->w1, c->dy1, c->m1, NULL, c->g1w, c->g1b, c->s1);
        break;
    }
}

static void bench_kernels(int b, int reps, af_rng *g)
{
    bench_ctx c = {.b = b};
    tn_conv2d s1 = {.c = 1, .h = 28, .w = 28, .oc = 6, .kh = 5, .kw = 5, .stride = 1};
    tn_conv2d s2 = {.c = 6, .h = 12, .w = 12, .oc = 12, .kh = 5, .kw = 5, .stride = 1};
    tn_conv2d_geometry(&s1);
    tn_conv2d_geometry(&s2);
    if (tn_convpool_create(&s1, &c.c1) || tn_convpool_create(&s2, &c.c2)) {
        printf("fused conv kernels unavailable in this build\n");
        return;
    }
    c.x = rnd(g, (size_t)b * 784, 1.5f);
    c.w1 = rnd(g, 150, 0.2f), c.b1 = rnd(g, 6, 0.2f), c.y1 = rnd(g, (size_t)b * 864, 0);
    c.w2 = rnd(g, 1800, 0.08f), c.b2 = rnd(g, 12, 0.08f), c.y2 = rnd(g, (size_t)b * 192, 0);
    c.f1w = rnd(g, 23040, 0.07f), c.f1b = rnd(g, 120, 0.07f), c.h1 = rnd(g, (size_t)b * 120, 0);
    c.f2w = rnd(g, 7200, 0.09f), c.f2b = rnd(g, 60, 0.09f), c.h2 = rnd(g, (size_t)b * 60, 0);
    c.ow = rnd(g, 600, 0.13f), c.ob = rnd(g, 10, 0.13f), c.z = rnd(g, (size_t)b * 10, 0);
    c.dz = rnd(g, (size_t)b * 10, 0), c.dh2 = rnd(g, (size_t)b * 60, 0);
    c.dh1 = rnd(g, (size_t)b * 120, 0), c.dy2 = rnd(g, (size_t)b * 192, 0);
    c.dy1 = rnd(g, (size_t)b * 864, 0);
    c.g1w = rnd(g, 150, 0), c.g1b = rnd(g, 6, 0), c.g2w = rnd(g, 1800, 0), c.g2b = rnd(g, 12, 0);
    c.gf1w = rnd(g, 23040, 0), c.gf1b = rnd(g, 120, 0), c.gf2w = rnd(g, 7200, 0);
    c.gf2b = rnd(g, 60, 0), c.gow = rnd(g, 600, 0), c.gob = rnd(g, 10, 0);
    c.s1 = af_alloc(sizeof(float) * tn_convpool_scratch(c.c1));
    c.s2 = af_alloc(sizeof(float) * tn_convpool_scratch(c.c2));
    c.m1 = af_alloc(2 * (size_t)b * tn_convpool_mask_n(c.c1));
    c.m2 = af_alloc(2 * (size_t)b * tn_convpool_mask_n(c.c2));
    c.lab = af_alloc((size_t)b);
    c.wt = af_alloc(sizeof(float) * 23040);
    for (int i = 0; i < b; i++)
        c.lab[i] = (uint8_t)(af_rng_u32(g) % 10);
    for (int k = 0; k < K_N; k++) /* warm up, and realistic activations for the next kernels */
        run_kernel(&c, k);
    printf("\nkernels at batch %d (best of 5 × %d calls, thread CPU time)\n", b, reps);
    printf("  %-24s %10s %10s %9s\n", "kernel", "us/call", "ns/image", "GFLOP/s");
    double tot = 0, totf = 0;
    const int fc_t = b >= 8; /* which fc forward form the model uses at this batch */
    for (int k = 0; k < K_N; k++) {
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            double t0 = cpu_now();
            for (int i = 0; i < reps; i++)
                run_kernel(&c, k);
            double t = (cpu_now() - t0) / reps;
            best = t < best ? t : best;
        }
        const int counted = fc_t ? (k < K_FC1_F || k > K_OUT_F) : k != K_FC_FT;
        if (counted) {
            tot += best;
            totf += kflops[k] * b;
        }
        printf("  %-24s %10.2f %10.1f %9.1f%s\n", knames[k], best * 1e6, best * 1e9 / b,
               kflops[k] ? kflops[k] * b / best / 1e9 : 0.0, counted ? "" : "   (not in total)");
    }
    printf("  %-24s %10.2f %10.1f %9.1f   (%.0f img/s without the optimizer)\n", "total", tot * 1e6,
           tot * 1e9 / b, totf / tot / 1e9, b / tot);
    tn_convpool_free(c.c1);
    tn_convpool_free(c.c2);
    float **all[] = {&c.x, &c.w1, &c.b1, &c.y1, &c.w2, &c.b2, &c.y2, &c.f1w, &c.f1b, &c.h1,
                     &c.f2w, &c.f2b, &c.h2, &c.ow, &c.ob, &c.z, &c.dz, &c.dh2, &c.dh1, &c.dy2,
                     &c.dy1, &c.g1w, &c.g1b, &c.g2w, &c.g2b, &c.gf1w, &c.gf1b, &c.gf2w,
                     &c.gf2b, &c.gow, &c.gob, &c.s1, &c.s2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        af_free(*all[i]);
    af_free(c.m1), af_free(c.m2), af_free(c.lab), af_free(c.wt);
}

static void bench_sgemm(void)
{
    const int n = 512;
    af_rng g;
    af_rng_seed(&g, 1, 1);
    float *a = rnd(&g, (size_t)n * n, 1), *b = rnd(&g, (size_t)n * n, 1);
    float *c = af_alloc(sizeof(float) * n * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 1e30;
    for (int r = 0; r < 10; r++) {
        double t0 = cpu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = cpu_now() - t0;
        best = t < best ? t : best;
    }
    const char *arch = getenv("BLIS_ARCH_TYPE");
    printf("sgemm 512^3 (CBLAS, BLIS_ARCH_TYPE=%s): %.1f GFLOP/s\n", arch ? arch : "unset",
           2.0 * n * n * n / best / 1e9);
    af_free(a), af_free(b), af_free(c);
}

/* Forward-only inference at batch 1000 over the test set: 1 thread (nn_forward), and 1 and
 * 2 threads through train_evaluate (which adds the loss and the confusion matrix). */
static void bench_infer(const data_dataset *te, int reps)
{
    nn_model *m;
    if (nn_model_from_file("models/fashion_cnn.json", NULL, &m))
        return;
    nn_model_init(m, 1);
    nn_ws *ws[2] = {nn_ws_create(m, 1000), nn_ws_create(m, 1000)};
    af_pool *pool = af_pool_create(2);
    double bc = 1e30, bw = 1e30, be[2] = {1e30, 1e30};
    const size_t n = te->n / 1000 * 1000;
    for (int r = 0; r < reps; r++) {
        double c0 = cpu_now(), w0 = wall_now();
        for (size_t i = 0; i < n; i += 1000)
            nn_forward(m, ws[0], te->x + i * te->sample_size, 1000, 0, 0);
        double c = cpu_now() - c0, w = wall_now() - w0;
        bc = c < bc ? c : bc;
        bw = w < bw ? w : bw;
        for (int t = 0; t < 2; t++) {
            train_eval ev;
            w0 = wall_now();
            train_evaluate(m, ws, t ? pool : NULL, te, NULL, n, &ev);
            w = wall_now() - w0;
            be[t] = w < be[t] ? w : be[t];
        }
    }
    printf("inference batch 1000 over %zu test images: nn_forward %.0f img/s (wall), %.0f (CPU "
           "time); train_evaluate 1 thread %.0f img/s, 2 threads %.0f img/s (wall, best of %d)\n",
           n, n / bw, n / bc, n / be[0], n / be[1], reps);
    af_pool_free(pool);
    nn_ws_free(ws[0]);
    nn_ws_free(ws[1]);
    nn_model_free(m);
}

static void bench_model(const data_dataset *te, int reps)
{
    nn_model *m;
    if (nn_model_from_file("models/fashion_cnn.json", NULL, &m)) {
        printf("models/fashion_cnn.json not found: run from the repository root\n");
        return;
    }
    nn_model_init(m, 1);
    /* inference: batch 1000 over the test set */
    nn_ws *ws = nn_ws_create(m, 1000);
    double bc = 1e30, bw = 1e30;
    for (int r = 0; r < reps; r++) {
        double c0 = cpu_now(), w0 = wall_now();
        for (size_t i = 0; i + 1000 <= te->n; i += 1000)
            nn_forward(m, ws, te->x + i * te->sample_size, 1000, 0, 0);
        double c = cpu_now() - c0, w = wall_now() - w0;
        bc = c < bc ? c : bc;
        bw = w < bw ? w : bw;
    }
    size_t n = te->n / 1000 * 1000;
    printf("\ninference batch 1000 over %zu test images: %.0f img/s (CPU time), %.0f img/s (wall)\n",
           n, n / bc, n / bw);
    nn_ws_free(ws);
    /* training steps, 1 thread, by phase */
    static const int batches[] = {100, 10};
    for (int bi = 0; bi < 2; bi++) {
        const int b = batches[bi];
        nn_optim_cfg oc = nn_optim_defaults(NN_OPT_ADAM);
        oc.lr = 0.01f;
        train_ctx *t;
        if (train_create(m, &oc, b, 1, &t))
            break;
        ws = nn_ws_create(m, b);
        float *grads = af_alloc(sizeof(float) * m->n_params);
        const int steps = b == 100 ? 300 : 2000;
        double ph[4] = {1e30, 1e30, 1e30, 1e30}, step_best = 1e30;
        for (int r = 0; r < 3; r++) {
            double acc[4] = {0, 0, 0, 0};
            for (int s = 0; s < steps; s++) {
                const float *x = te->x + (size_t)(s * b % (int)(te->n - b)) * te->sample_size;
                const uint8_t *y = te->y + (s * b % (int)(te->n - b));
                double t0 = cpu_now();
                nn_forward(m, ws, x, b, 1, (uint64_t)s);
                double t1 = cpu_now();
                nn_loss(m, ws, y, b, 1.0f / b, NULL);
                double t2 = cpu_now();
                nn_backward(m, ws, x, b, grads);
                double t3 = cpu_now();
                nn_optim_step(train_optim(t), m->params, grads);
                double t4 = cpu_now();
                acc[0] += t1 - t0, acc[1] += t2 - t1, acc[2] += t3 - t2, acc[3] += t4 - t3;
            }
            for (int q = 0; q < 4; q++)
                ph[q] = acc[q] < ph[q] ? acc[q] : ph[q];
            double c0 = cpu_now();
            for (int s = 0; s < steps; s++) {
                const size_t o = (size_t)(s * b % (int)(te->n - b));
                train_step(t, te->x + o * te->sample_size, te->y + o, b, (uint64_t)s, NULL, NULL);
            }
            double c = cpu_now() - c0;
            step_best = c < step_best ? c : step_best;
        }
        const double img = (double)steps * b;
        printf("training batch %d, 1 thread: forward %.0f ns/img, loss %.0f, backward %.0f, "
               "adam %.0f (%.1f us/step); train_step %.0f img/s (CPU time, no data gather)\n",
               b, ph[0] / img * 1e9, ph[1] / img * 1e9, ph[2] / img * 1e9, ph[3] / img * 1e9,
               ph[3] / steps * 1e6, img / step_best);
        af_free(grads);
        nn_ws_free(ws);
        train_free(t);
    }
    nn_model_free(m);
}

/* train_step images/s on 1 and 2 threads (wall clock, best of reps runs of `steps` steps:
 * a shared machine only ever makes a run slower). */
static void bench_threads(const data_dataset *te, int reps)
{
    nn_model *m;
    if (nn_model_from_file("models/fashion_cnn.json", NULL, &m))
        return;
    nn_model_init(m, 1);
    static const int batches[] = {100, 10};
    for (int bi = 0; bi < 2; bi++)
        for (int threads = 1; threads <= 2; threads++) {
            const int b = batches[bi], steps = b == 100 ? 300 : 2000;
            nn_optim_cfg oc = nn_optim_defaults(NN_OPT_ADAM);
            train_ctx *t;
            if (train_create(m, &oc, b, threads, &t))
                return;
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double w0 = wall_now();
                for (int s = 0; s < steps; s++) {
                    const size_t o = (size_t)(s * b % (int)(te->n - b));
                    train_step(t, te->x + o * te->sample_size, te->y + o, b, (uint64_t)s, NULL, NULL);
                }
                double w = wall_now() - w0;
                best = w < best ? w : best;
            }
            printf("train_step batch %3d, %d thread%s: %.0f img/s (wall, best of %d)\n", b,
                   threads, threads > 1 ? "s" : " ", (double)steps * b / best, reps);
            train_free(t);
        }
    nn_model_free(m);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "--infer") == 0) {
        data_dataset *te = NULL;
        if (data_load_fashion_mnist("fashion-mnist", 0, 0.2860f, 0.3530f, 0, &te)) {
            printf("Fashion-MNIST test set not found\n");
            return 1;
        }
        bench_infer(te, 7);
        data_dataset_free(te);
        return 0;
    }
    bench_sgemm();
    if (strcmp(mode, "--sgemm") == 0)
        return 0;
    af_rng g;
    af_rng_seed(&g, 7, 7);
    bench_kernels(100, 200, &g);
    bench_kernels(10, 2000, &g);
    data_dataset *te = NULL;
    if (data_load_fashion_mnist("fashion-mnist", 0, 0.2860f, 0.3530f, 0, &te)) {
        printf("Fashion-MNIST test set not found: model benchmarks skipped\n");
        return 0;
    }
    bench_model(te, 5);
    bench_infer(te, 5);
    bench_threads(te, 5);
    data_dataset_free(te);
    return 0;
}
