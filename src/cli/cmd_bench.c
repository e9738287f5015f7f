/* cmd_bench.c — `artificien bench`: throughput of the engine on this machine, for make bench.
 *
 * Measures training images/s (forward + backward + optimizer step, batches gathered from
 * the shuffled training set exactly as `train` does), inference images/s (forward only over
 * the test set) and the single-core SGEMM rate of the linked BLAS at 512^3, so a run can say
 * what fraction of the machine's GEMM rate training reaches. Prints one JSON line. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/err.h"
#include "core/mem.h"
#include "core/timer.h"

/* Best-of-3 GFLOP/s of a square SGEMM. */
static double gemm_rate(int n)
{
    float *a = af_alloc(sizeof(float) * n * n), *b = af_alloc(sizeof(float) * n * n),
          *c = af_alloc(sizeof(float) * n * n);
    double best = 0;
    if (a && b && c) {
        for (int i = 0; i < n * n; i++) {
            a[i] = (float)(i % 7) * 0.1f;
            b[i] = (float)(i % 5) * 0.1f;
        }
        tn_gemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
        for (int r = 0; r < 3; r++) {
            int reps = 0;
            double t0 = af_now(), dt;
            do {
                tn_gemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
                reps++;
            } while ((dt = af_now() - t0) < 0.3);
            double g = 2.0 * n * n * (double)n * reps / dt / 1e9;
            if (g > best)
                best = g;
        }
    }
    af_free(a);
    af_free(b);
    af_free(c);
    return best;
}

int cmd_bench(int argc, char **argv)
{
    const char *spec = NULL, *data = "fashion-mnist";
    int batch = 100, threads = 1, steps = 300, infer_batch = 1000, infer_reps = 3, gemm = 1;
    uint64_t seed = 1;
    const arg_opt opts[] = {
        {"model", ARG_STR, &spec, "model spec JSON (default: models/fashion_cnn.json)"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"batch", ARG_INT, &batch, "training batch size (default 100)"},
        {"threads", ARG_INT, &threads, "threads (default 1)"},
        {"steps", ARG_INT, &steps, "timed training steps (default 300; 0 skips training)"},
        {"infer-batch", ARG_INT, &infer_batch, "inference batch (default 1000)"},
        {"infer-reps", ARG_INT, &infer_reps, "timed passes over the test set (default 3; 0 skips)"},
        {"gemm", ARG_INT, &gemm, "1 to measure the 512^3 SGEMM rate (default 1)"},
        {"seed", ARG_U64, &seed, "seed (default 1)"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("bench", "[options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (batch < 1 || threads < 1 || threads > 64 || steps < 0 || infer_batch < 1 || infer_reps < 0)
        return cli_fail("bench", "bad option values");
    nn_model *m;
    if (nn_model_from_file(spec ? spec : cli_default_spec(), NULL, &m))
        return cli_fail("bench", "%s", af_errmsg());
    nn_model_init(m, seed);
    data_dataset *tr = NULL, *te = NULL;
    if (data_load_fashion_mnist_u8(data, 1, 0.2860f, 0.3530f, 0, &tr) ||
        data_load_fashion_mnist_u8(data, 0, 0.2860f, 0.3530f, 0, &te)) {
        nn_model_free(m);
        data_dataset_free(tr);
        return cli_fail("bench", "%s", af_errmsg());
    }
    double train_ips = 0, infer_ips = 0, gflops = 0;
    int rc = 0;
    if (steps > 0) {
        nn_optim_cfg oc = nn_optim_defaults(NN_OPT_ADAM);
        oc.lr = 0.01f;
        train_ctx *t;
        if (train_create(m, &oc, batch, threads, &t)) {
            rc = cli_fail("bench", "%s", af_errmsg());
            goto done;
        }
        af_rng rng;
        af_rng_seed(&rng, seed, 1);
        train_epoch_stats st;
        train_epoch(t, tr, NULL, tr->n, batch, &rng, steps / 10 + 1, NULL, NULL, &st); /* warm-up */
        double best = 0;
        for (int rep = 0; rep < 3; rep++) {
            train_epoch(t, tr, NULL, tr->n, batch, &rng, steps, NULL, NULL, &st);
            double ips = (double)st.samples / st.seconds;
            if (ips > best)
                best = ips;
        }
        train_ips = best;
        train_free(t);
    }
    if (infer_reps > 0) {
        nn_ws *ws[64] = {0};
        af_pool *pool = threads > 1 ? af_pool_create(threads) : NULL;
        for (int i = 0; i < threads; i++)
            if (!(ws[i] = nn_ws_create(m, infer_batch)))
                rc = cli_fail("bench", "out of memory");
        train_eval ev;
        double best = 0;
        for (int rep = 0; !rc && rep <= infer_reps; rep++) {
            double t0 = af_now();
            train_evaluate(m, ws, pool, te, NULL, te->n, &ev);
            double ips = (double)te->n / (af_now() - t0);
            if (rep > 0 && ips > best) /* rep 0 is the warm-up */
                best = ips;
        }
        infer_ips = best;
        for (int i = 0; i < threads; i++)
            nn_ws_free(ws[i]);
        af_pool_free(pool);
    }
    if (gemm)
        gflops = gemm_rate(512);
    if (!rc) {
        /* FLOPs of one training image: forward, weight gradients, input gradients of all
         * layers but the first (which needs none) */
        double fwd = m->flops_fwd, first = 0;
        for (int i = 0; i < m->n_layers; i++)
            if (m->layers[i].w_n) {
                const nn_layer *l = &m->layers[i];
                first = l->kind == NN_CONV2D
                            ? 2.0 * l->out_c * l->out_h * l->out_w * l->geo.c * l->geo.kh * l->geo.kw
                            : 2.0 * l->in_features * l->out_features;
                break;
            }
        double train_flops = 3 * fwd - first;
        printf("{\"batch\": %d, \"threads\": %d, \"train_images_per_sec\": %.1f, "
               "\"infer_batch\": %d, \"infer_images_per_sec\": %.1f, \"train_flops_per_image\": %.0f, "
               "\"train_gflops\": %.2f, \"gemm512_gflops\": %.2f, \"fraction_of_gemm\": %.3f}\n",
               batch, threads, train_ips, infer_batch, infer_ips, train_flops,
               train_ips * train_flops / 1e9, gflops,
               gflops > 0 ? train_ips * train_flops / 1e9 / gflops : 0.0);
    }
done:
    data_dataset_free(tr);
    data_dataset_free(te);
    nn_model_free(m);
    return rc;
}
