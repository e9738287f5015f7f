/* train.c — the training step, epoch loop and evaluation (see train.h). */
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "core/timer.h"

#define TRAIN_MAX_THREADS 64

struct train_ctx {
    nn_model *m;
    nn_optim opt;
    int threads, max_batch, chunk;
    af_pool *pool;
    nn_ws *ws[TRAIN_MAX_THREADS];
    float *grads[TRAIN_MAX_THREADS];
    const float *prox_anchor;
    float prox_mu;
    const float *corr;
    /* the step in flight, read by the workers */
    const float *x;
    const uint8_t *y;
    int b;
    uint64_t seed;
    double loss[TRAIN_MAX_THREADS];
    int correct[TRAIN_MAX_THREADS];
    /* epoch scratch */
    float *bx;
    uint8_t *by;
    uint32_t *order;
    size_t order_cap;
};

int train_create(nn_model *m, const nn_optim_cfg *opt, int max_batch, int threads,
                 train_ctx **out)
{
    *out = NULL;
    if (threads < 1 || threads > TRAIN_MAX_THREADS)
        return af_seterr(AF_ERANGE, "threads must be in [1, %d], got %d", TRAIN_MAX_THREADS, threads);
    if (max_batch < 1)
        return af_seterr(AF_ERANGE, "batch must be >= 1, got %d", max_batch);
    train_ctx *t = calloc(1, sizeof *t);
    if (!t)
        return af_seterr(AF_ENOMEM, "trainer: out of memory");
    int rc = nn_optim_init(&t->opt, opt, m->n_params);
    if (rc) {
        free(t);
        return rc;
    }
    t->m = m;
    t->threads = threads;
    t->max_batch = max_batch;
    t->chunk = (max_batch + threads - 1) / threads;
    if (threads > 1 && !(t->pool = af_pool_create(threads)))
        goto oom;
    for (int i = 0; i < threads; i++) {
        t->ws[i] = nn_ws_create(m, t->chunk);
        t->grads[i] = af_alloc(sizeof(float) * m->n_params);
        if (!t->ws[i] || !t->grads[i])
            goto oom;
    }
    t->bx = af_alloc(sizeof(float) * (size_t)max_batch * m->layers[0].in_n);
    t->by = af_alloc((size_t)max_batch);
    if (!t->bx || !t->by)
        goto oom;
    *out = t;
    return 0;
oom:
    train_free(t);
    return af_seterr(AF_ENOMEM, "trainer: out of memory");
}

void train_free(train_ctx *t)
{
    if (!t)
        return;
    for (int i = 0; i < TRAIN_MAX_THREADS; i++) {
        nn_ws_free(t->ws[i]);
        af_free(t->grads[i]);
    }
    af_pool_free(t->pool);
    nn_optim_deinit(&t->opt);
    af_free(t->bx);
    af_free(t->by);
    free(t->order);
    free(t);
}

nn_optim *train_optim(train_ctx *t) { return &t->opt; }

void train_set_prox(train_ctx *t, const float *anchor, float mu)
{
    t->prox_anchor = mu != 0.0f ? anchor : NULL;
    t->prox_mu = mu;
}

void train_set_correction(train_ctx *t, const float *corr) { t->corr = corr; }

/* Phase 1 of a step: forward and backward of chunk i (whichever thread runs it), with
 * chunk i's workspace into chunk i's gradient buffer (zero on entry: phase 2 leaves it so). */
static void step_worker(void *ctx, int i, int tid)
{
    (void)tid;
    train_ctx *t = ctx;
    int lo = i * t->chunk, hi = lo + t->chunk;
    if (hi > t->b)
        hi = t->b;
    t->loss[i] = 0.0;
    t->correct[i] = 0;
    if (lo >= hi)
        return;
    const size_t in_n = t->m->layers[0].in_n;
    const float *x = t->x + (size_t)lo * in_n;
    nn_forward(t->m, t->ws[i], x, hi - lo, 1, t->seed * 131 + (uint64_t)i);
    t->loss[i] = nn_loss(t->m, t->ws[i], t->y + lo, hi - lo, 1.0f / (float)t->b, &t->correct[i]);
    nn_backward(t->m, t->ws[i], x, hi - lo, t->grads[i]);
}

/* Phase 2: parameter range i of `threads` equal ranges (16-float aligned): sum the chunks'
 * gradients in chunk order (the same order whatever thread runs what, so a run is
 * reproducible for a given thread count), zero them for the next step, add the FedProx /
 * SCAFFOLD terms, and apply the optimizer to the range. */
static void update_worker(void *ctx, int i, int tid)
{
    (void)tid;
    train_ctx *t = ctx;
    const size_t n = t->m->n_params;
    const size_t per = ((n + (size_t)t->threads - 1) / (size_t)t->threads + 15) & ~(size_t)15;
    const size_t lo = (size_t)i * per < n ? (size_t)i * per : n, hi = lo + per < n ? lo + per : n;
    if (lo >= hi)
        return;
    float *restrict g = t->grads[0] + lo;
    const size_t len = hi - lo;
    for (int k = 1; k < t->threads; k++) {
        float *restrict gk = t->grads[k] + lo;
        for (size_t j = 0; j < len; j++) {
            g[j] += gk[j];
            gk[j] = 0.0f;
        }
    }
    const float *restrict w = t->m->params + lo;
    if (t->prox_anchor) {
        /* FedProx: d/dw (mu/2)||w - w_global||^2 = mu (w - w_global) */
        const float mu = t->prox_mu, *restrict a = t->prox_anchor + lo;
        for (size_t j = 0; j < len; j++)
            g[j] += mu * (w[j] - a[j]);
    }
    if (t->corr) {
        const float *restrict c = t->corr + lo;
        for (size_t j = 0; j < len; j++)
            g[j] += c[j];
    }
    /* the optimizer on this range: a view of its state (step is advanced once, by the caller) */
    nn_optim view = t->opt;
    view.n = len;
    view.m = t->opt.m ? t->opt.m + lo : NULL;
    view.v = t->opt.v ? t->opt.v + lo : NULL;
    nn_optim_step(&view, t->m->params + lo, g);
    memset(g, 0, sizeof(float) * len);
}

void train_step(train_ctx *t, const float *x, const uint8_t *y, int b, uint64_t step_seed,
                double *loss, int *correct)
{
    t->x = x;
    t->y = y;
    t->b = b;
    t->seed = step_seed;
    if (t->pool) { /* chunks go to whichever thread is running: none waits for a slow one */
        af_pool_run_claimed(t->pool, step_worker, t, t->threads);
        af_pool_run_claimed(t->pool, update_worker, t, t->threads);
    } else {
        step_worker(t, 0, 0);
        update_worker(t, 0, 0);
    }
    t->opt.step++;
    double ls = 0.0;
    int hits = 0;
    for (int k = 0; k < t->threads; k++) {
        ls += t->loss[k];
        hits += t->correct[k];
    }
    if (loss)
        *loss = ls / b;
    if (correct)
        *correct = hits;
}

void train_epoch(train_ctx *t, const data_dataset *ds, const uint32_t *idx, size_t n, int batch,
                 af_rng *rng, long max_steps, train_step_cb cb, void *user,
                 train_epoch_stats *st)
{
    memset(st, 0, sizeof *st);
    if (!idx)
        n = ds->n;
    if (batch > t->max_batch)
        batch = t->max_batch;
    if (n > t->order_cap) {
        uint32_t *o = realloc(t->order, sizeof(uint32_t) * n);
        if (!o)
            return;
        t->order = o;
        t->order_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        t->order[i] = idx ? idx[i] : (uint32_t)i;
    af_rng_shuffle_u32(rng, t->order, n);
    long steps = (long)((n + (size_t)batch - 1) / (size_t)batch);
    if (max_steps > 0 && max_steps < steps)
        steps = max_steps;
    double t0 = af_now(), loss_sum = 0.0;
    size_t hits = 0;
    uint64_t seed0 = af_rng_u64(rng);
    for (long s = 0; s < steps; s++) {
        size_t lo = (size_t)s * batch, b = n - lo < (size_t)batch ? n - lo : (size_t)batch;
        data_gather(ds, t->order + lo, b, t->bx, t->by);
        double l;
        int c;
        train_step(t, t->bx, t->by, (int)b, seed0 + (uint64_t)s, &l, &c);
        loss_sum += l * (double)b;
        hits += (size_t)c;
        st->samples += b;
        st->steps++;
        if (cb && cb(user, s + 1, steps, loss_sum / (double)st->samples, af_now() - t0))
            break;
    }
    st->seconds = af_now() - t0;
    st->loss = st->samples ? loss_sum / (double)st->samples : 0.0;
    st->accuracy = st->samples ? (double)hits / (double)st->samples : 0.0;
}

typedef struct eval_job {
    const nn_model *m;
    nn_ws **ws;
    const data_dataset *ds;
    const uint32_t *idx;
    size_t n;
    int batch;
    float *bx[TRAIN_MAX_THREADS];   /* thread t's batch, a slice of bx_all */
    uint8_t *by[TRAIN_MAX_THREADS]; /* a slice of by_all */
    float *bx_all;
    uint8_t *by_all;
    double *loss; /* per batch, summed in batch order: the same sum for any thread count */
    long conf[TRAIN_MAX_THREADS][TRAIN_EVAL_MAX_CLASSES * TRAIN_EVAL_MAX_CLASSES];
} eval_job;

static void eval_worker(void *ctx, int i, int tid)
{
    eval_job *j = ctx;
    size_t lo = (size_t)i * j->batch, b = j->n - lo < (size_t)j->batch ? j->n - lo : (size_t)j->batch;
    const int k = j->m->n_classes;
    const float *x;
    const uint8_t *y;
    if (j->idx) {
        data_gather(j->ds, j->idx + lo, b, j->bx[tid], j->by[tid]);
        x = j->bx[tid];
        y = j->by[tid];
    } else { /* a contiguous range: float samples are used in place, 8-bit ones decoded */
        x = data_rows(j->ds, lo, b, j->bx[tid]);
        y = j->ds->y + lo;
    }
    const float *z = nn_forward(j->m, j->ws[tid], x, (int)b, 0, 0);
    j->loss[i] = tn_softmax_xent((int)b, k, z, y, 0.0f, NULL, NULL);
    for (size_t s = 0; s < b; s++) {
        const float *zs = z + s * k;
        int am = 0;
        for (int c = 1; c < k; c++)
            if (zs[c] > zs[am])
                am = c;
        j->conf[tid][y[s] * k + am]++;
    }
}

int train_evaluate(const nn_model *m, nn_ws **ws, af_pool *pool, const data_dataset *ds,
                   const uint32_t *idx, size_t n, train_eval *out)
{
    const int k = m->n_classes;
    memset(out, 0, sizeof *out);
    if (k > TRAIN_EVAL_MAX_CLASSES)
        return af_seterr(AF_ERANGE, "evaluation supports up to %d classes", TRAIN_EVAL_MAX_CLASSES);
    if (ds->sample_size != m->layers[0].in_n)
        return af_seterr(AF_ESHAPE, "dataset samples have %zu values, the model expects %zu",
                         ds->sample_size, m->layers[0].in_n);
    if (!idx)
        n = ds->n;
    int threads = pool ? af_pool_threads(pool) : 1;
    eval_job *j = calloc(1, sizeof *j);
    if (!j)
        return af_seterr(AF_ENOMEM, "evaluate: out of memory");
    j->m = m;
    j->ws = ws;
    j->ds = ds;
    j->idx = idx;
    j->n = n;
    j->batch = nn_ws_max_batch(ws[0]);
    int rc = 0;
    if (idx || ds->x8) { /* batch buffers, unless every batch is a slice of float samples */
        /* One block for all threads, not one per thread: glibc then keeps it in the heap
         * from call to call instead of handing it back and faulting it in again (measured on
         * the 10k test images, 2 threads, batch 1000: 1,600 page faults per call with one
         * block per thread, 100 with one block). */
        const size_t fl = ((size_t)j->batch * ds->sample_size + 15) & ~(size_t)15;
        j->bx_all = af_alloc(sizeof(float) * fl * (size_t)threads);
        j->by_all = af_alloc((size_t)j->batch * (size_t)threads);
        if (!j->bx_all || !j->by_all) {
            rc = af_seterr(AF_ENOMEM, "evaluate: out of memory");
            goto done;
        }
        for (int t = 0; t < threads; t++) {
            j->bx[t] = j->bx_all + (size_t)t * fl;
            j->by[t] = j->by_all + (size_t)t * (size_t)j->batch;
        }
    }
    int jobs = (int)((n + (size_t)j->batch - 1) / (size_t)j->batch);
    if (!(j->loss = calloc((size_t)jobs + 1, sizeof(double)))) {
        rc = af_seterr(AF_ENOMEM, "evaluate: out of memory");
        goto done;
    }
    if (pool) /* per-thread state is only scratch and integer counts: any thread may run a batch */
        af_pool_run_claimed(pool, eval_worker, j, jobs);
    else
        for (int i = 0; i < jobs; i++)
            eval_worker(j, i, 0);
    double loss = 0.0;
    long hits = 0;
    out->k = k;
    out->n = n;
    for (int i = 0; i < jobs; i++)
        loss += j->loss[i];
    for (int t = 0; t < threads; t++)
        for (int c = 0; c < k * k; c++)
            out->confusion[c] += j->conf[t][c];
    for (int c = 0; c < k; c++)
        hits += out->confusion[c * k + c];
    out->loss = n ? loss / (double)n : 0.0;
    out->accuracy = n ? (double)hits / (double)n : 0.0;
done:
    af_free(j->bx_all);
    af_free(j->by_all);
    free(j->loss);
    free(j);
    return rc;
}

int train_evaluate_simple(const nn_model *m, const data_dataset *ds, const uint32_t *idx,
                          size_t n, int threads, train_eval *out)
{
    nn_ws *ws[TRAIN_MAX_THREADS] = {0};
    af_pool *pool = NULL;
    int rc = 0;
    if (threads < 1 || threads > TRAIN_MAX_THREADS)
        return af_seterr(AF_ERANGE, "threads must be in [1, %d]", TRAIN_MAX_THREADS);
    if (threads > 1 && !(pool = af_pool_create(threads)))
        return af_seterr(AF_ENOMEM, "evaluate: cannot start threads");
    for (int t = 0; t < threads; t++)
        if (!(ws[t] = nn_ws_create(m, 500))) {
            rc = af_seterr(AF_ENOMEM, "evaluate: out of memory");
            goto done;
        }
    rc = train_evaluate(m, ws, pool, ds, idx, n, out);
done:
    for (int t = 0; t < threads; t++)
        nn_ws_free(ws[t]);
    af_pool_free(pool);
    return rc;
}

void train_eval_prf(const train_eval *e, double *precision, double *recall, double *f1)
{
    const int k = e->k;
    for (int c = 0; c < k; c++) {
        long tp = e->confusion[c * k + c], col = 0, row = 0;
        for (int r = 0; r < k; r++) {
            col += e->confusion[r * k + c];
            row += e->confusion[c * k + r];
        }
        precision[c] = col ? (double)tp / (double)col : 0.0;
        recall[c] = row ? (double)tp / (double)row : 0.0;
        f1[c] = precision[c] + recall[c] > 0 ? 2 * precision[c] * recall[c] / (precision[c] + recall[c]) : 0.0;
    }
}
