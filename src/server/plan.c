/* plan.c — plan and dataset-schema validation (see plan.h). */
#include "server/plan.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "fed/dp.h"
#include "fed/secwire.h"
#include "fed/strategy.h"

/* Reads an optional number field into *v, checking [lo, hi] (integers when integral). */
static int num_field(const cJSON *obj, const char *key, double lo, double hi, int integral,
                     double *v)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j)
        return 0;
    const char *kind = integral ? "an integer" : "a number";
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) ||
        (integral && j->valuedouble != floor(j->valuedouble)))
        return af_seterr(AF_EINVAL, "plan.%s: expected %s in [%g, %g]", key, kind, lo, hi);
    if (!(j->valuedouble >= lo && j->valuedouble <= hi))
        return af_seterr(AF_EINVAL, "plan.%s: %g is out of range, expected %s in [%g, %g]", key,
                         j->valuedouble, kind, lo, hi);
    *v = j->valuedouble;
    return 0;
}

static int str_field(const cJSON *obj, const char *key, char *buf, size_t cap)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j)
        return 0;
    if (!cJSON_IsString(j))
        return af_seterr(AF_EINVAL, "plan.%s: expected a string", key);
    if (strlen(j->valuestring) >= cap)
        return af_seterr(AF_EINVAL, "plan.%s: longer than %zu characters", key, cap - 1);
    snprintf(buf, cap, "%s", j->valuestring);
    return 0;
}

int srv_plan_parse(const cJSON *plan, const nn_model *m, srv_plan *out)
{
    static const char *const keys[] = {
        "strategy", "strategy_opts", "rounds", "devices_per_round", "min_reports",
        "over_selection", "round_deadline_s", "local_epochs", "batch", "optimizer", "lr",
        "momentum", "eval_every", "max_update_norm", "dataset", "seed", "dp_clip", "dp_noise", "dp_delta",
        "dp_target_epsilon", "dp_population", "dp_adaptive_quantile", "dp_adaptive_lr",
        "dp_adaptive_count_noise", "secagg", "secagg_threshold", "secagg_range",
        "secagg_max_samples", "kind", "stats_bound", "stats_noise", NULL};
    srv_plan p = {.strategy = "fedavg", .rounds = 0, .devices_per_round = 10, .min_reports = 0,
                  .over_selection = 1.3, .round_deadline_s = 60, .local_epochs = 1, .batch = 10,
                  .optimizer = "sgd", .lr = 0.05, .momentum = 0, .eval_every = 1,
                  .max_update_norm = 1000, .dataset = "fashion-mnist", .seed = 1,
                  .dp_delta = 1e-5, .dp_adaptive_lr = 0.2, .secagg_range = 1,
                  .secagg_max_samples = 10000, .stats_bound = 100, .stats_noise = 1};
    if (!cJSON_IsObject(plan))
        return af_seterr(AF_EINVAL, "plan: expected a JSON object");
    for (const cJSON *it = plan->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; keys[i]; i++)
            ok |= strcmp(it->string, keys[i]) == 0;
        if (!ok)
            return af_seterr(AF_EINVAL, "plan.%s: unknown field", it->string);
    }
    if (!cJSON_GetObjectItemCaseSensitive(plan, "rounds"))
        return af_seterr(AF_EINVAL, "plan.rounds: required (an integer in [1, 100000])");
    double v;
    int rc;
#define NUM(key, lo, hi, integral, dst)                                                      \
    do {                                                                                     \
        v = (double)(dst);                                                                   \
        if ((rc = num_field(plan, key, lo, hi, integral, &v)))                               \
            return rc;                                                                       \
        dst = v;                                                                             \
    } while (0)
    NUM("rounds", 1, 100000, 1, p.rounds);
    NUM("devices_per_round", 1, 100000, 1, p.devices_per_round);
    p.min_reports = (int)(0.8 * p.devices_per_round) > 0 ? (int)(0.8 * p.devices_per_round) : 1;
    NUM("min_reports", 1, p.devices_per_round, 1, p.min_reports);
    NUM("over_selection", 1, 10, 0, p.over_selection);
    NUM("round_deadline_s", 0.01, 604800, 0, p.round_deadline_s);
    NUM("local_epochs", 1, 1000, 1, p.local_epochs);
    NUM("batch", 1, 65536, 1, p.batch);
    NUM("lr", 1e-9, 100, 0, p.lr);
    NUM("momentum", 0, 0.999999, 0, p.momentum);
    NUM("eval_every", 0, 100000, 1, p.eval_every);
    NUM("max_update_norm", 1e-9, 1e12, 0, p.max_update_norm);
    NUM("seed", 0, 9007199254740992.0, 1, p.seed);
    NUM("dp_clip", 0, 1e12, 0, p.dp_clip);
    NUM("dp_noise", 0, 1e6, 0, p.dp_noise);
    NUM("dp_delta", 1e-300, 0.999999, 0, p.dp_delta);
    NUM("dp_target_epsilon", 0, 1e6, 0, p.dp_target_epsilon);
    NUM("dp_population", 0, 1e12, 1, p.dp_population);
    NUM("dp_adaptive_quantile", 0, 1, 0, p.dp_adaptive_quantile);
    NUM("dp_adaptive_lr", 1e-6, 10, 0, p.dp_adaptive_lr);
    p.dp_adaptive_count_noise = p.devices_per_round / 20.0;
    NUM("dp_adaptive_count_noise", 0, 1e6, 0, p.dp_adaptive_count_noise);
    NUM("secagg_threshold", 1, SECAGG_MAX_DEVICES, 1, p.secagg_threshold);
    NUM("secagg_range", 1e-9, 1e9, 0, p.secagg_range);
    NUM("secagg_max_samples", 1, SECWIRE_MAX_SAMPLES, 1, p.secagg_max_samples);
    NUM("stats_bound", 1e-6, 1e6, 0, p.stats_bound);
    NUM("stats_noise", 0, 1e6, 0, p.stats_noise);
#undef NUM
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(plan, "secagg");
    if (sa && !cJSON_IsBool(sa))
        return af_seterr(AF_EINVAL, "plan.secagg: expected true or false");
    p.secagg = sa && cJSON_IsTrue(sa);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(plan, "kind");
    if (kind && (!cJSON_IsString(kind) || (strcmp(kind->valuestring, "train") != 0 &&
                                           strcmp(kind->valuestring, "label_stats") != 0)))
        return af_seterr(AF_EINVAL, "plan.kind: expected \"train\" or \"label_stats\"");
    p.label_stats = kind && strcmp(kind->valuestring, "label_stats") == 0;
    if (p.label_stats) {
        if (sa && !p.secagg)
            return af_seterr(AF_EINVAL, "plan.secagg: label_stats always uses secure aggregation");
        if (p.rounds != 1)
            return af_seterr(AF_EINVAL, "plan.rounds: a label_stats project has exactly 1 round");
        if (p.dp_clip > 0)
            return af_seterr(AF_EINVAL, "plan.dp_clip: label_stats takes its noise from "
                                        "stats_noise (dp_delta alone sets the reported δ)");
        p.secagg = 1;
        if (m->n_classes > POPSTATS_MAX_CLASSES)
            return af_seterr(AF_EINVAL, "spec: label_stats handles at most %d classes, the model "
                                        "has %d", POPSTATS_MAX_CLASSES, m->n_classes);
    } else {
        static const char *const st_keys[] = {"stats_bound", "stats_noise", NULL};
        for (int i = 0; st_keys[i]; i++)
            if (cJSON_GetObjectItemCaseSensitive(plan, st_keys[i]))
                return af_seterr(AF_EINVAL, "plan.%s: only for \"kind\": \"label_stats\"",
                                 st_keys[i]);
    }
    if (!p.secagg) {
        static const char *const sa_keys[] = {"secagg_threshold", "secagg_range",
                                              "secagg_max_samples", NULL};
        for (int i = 0; sa_keys[i]; i++)
            if (cJSON_GetObjectItemCaseSensitive(plan, sa_keys[i]))
                return af_seterr(AF_EINVAL, "plan.%s: needs plan.secagg true", sa_keys[i]);
    } else {
        int n = srv_plan_quota(&p);
        if (n > SECAGG_MAX_DEVICES)
            return af_seterr(AF_EINVAL, "plan.devices_per_round: secure aggregation takes at most "
                                        "%d devices per attempt (devices_per_round × "
                                        "over_selection = %d)", SECAGG_MAX_DEVICES, n);
        int t = p.secagg_threshold;
        if (!t)
            t = p.min_reports > n / 2 + 1 ? p.min_reports : n / 2 + 1;
        if (!(2 * t > n && t <= n) || t < p.min_reports)
            return af_seterr(AF_EINVAL, "plan.secagg_threshold: %d must be a majority of the %d "
                                        "devices an attempt selects (in [%d, %d]) and at least "
                                        "min_reports %d", t, n, n / 2 + 1, n, p.min_reports);
        p.secagg_threshold = t;
    }

    if (!(p.dp_clip > 0)) {
        static const char *const dp_keys[] = {"dp_noise", "dp_target_epsilon", "dp_population",
                                              "dp_adaptive_quantile", "dp_adaptive_lr",
                                              "dp_adaptive_count_noise", NULL};
        if (!p.label_stats && cJSON_GetObjectItemCaseSensitive(plan, "dp_delta"))
            return af_seterr(AF_EINVAL, "plan.dp_delta: needs plan.dp_clip > 0 (differential "
                                        "privacy is off)");
        for (int i = 0; dp_keys[i]; i++)
            if (cJSON_GetObjectItemCaseSensitive(plan, dp_keys[i]))
                return af_seterr(AF_EINVAL, "plan.%s: needs plan.dp_clip > 0 (differential "
                                            "privacy is off)", dp_keys[i]);
    } else if (p.dp_population > 0 && p.dp_population < p.devices_per_round) {
        return af_seterr(AF_EINVAL, "plan.dp_population: %lld is below devices_per_round %d",
                         (long long)p.dp_population, p.devices_per_round);
    } else if (p.dp_adaptive_quantile > 0 && p.dp_noise > 0) {
        double zd;
        if (dp_adaptive_noise_multiplier(p.dp_noise, p.dp_adaptive_count_noise, &zd))
            return af_seterr(AF_EINVAL, "plan.dp_adaptive_count_noise: %g is too small for "
                                        "dp_noise %g (it must exceed dp_noise/2)",
                             p.dp_adaptive_count_noise, p.dp_noise);
    }
    if ((rc = str_field(plan, "strategy", p.strategy, sizeof p.strategy)) ||
        (rc = str_field(plan, "strategy_opts", p.strategy_opts, sizeof p.strategy_opts)) ||
        (rc = str_field(plan, "optimizer", p.optimizer, sizeof p.optimizer)) ||
        (rc = str_field(plan, "dataset", p.dataset, sizeof p.dataset)))
        return rc;
    if (strcmp(p.optimizer, "sgd") != 0 && strcmp(p.optimizer, "adam") != 0)
        return af_seterr(AF_EINVAL, "plan.optimizer: \"%s\" is not one of sgd, adam", p.optimizer);
    if (!p.dataset[0])
        return af_seterr(AF_EINVAL, "plan.dataset: must not be empty");
    /* SCAFFOLD needs per-device control variates on the wire: not in protocol v1 */
    if (strcmp(p.strategy, "scaffold") == 0)
        return af_seterr(AF_EINVAL, "plan.strategy: scaffold is not supported by the coordinator "
                                    "(use fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, "
                                    "fednova, fedmedian, fedtrimmedavg or krum)");
    /* robust aggregation reads every individual update back at commit */
    if ((p.secagg || p.dp_clip > 0) && (!strcmp(p.strategy, "fedmedian") ||
                                        !strcmp(p.strategy, "fedtrimmedavg") ||
                                        !strcmp(p.strategy, "krum")))
        return af_seterr(AF_EINVAL, "plan.strategy: %s cannot be combined with %s: robust "
                                    "aggregation needs the individual updates, which secure "
                                    "aggregation hides and DP's sensitivity analysis does not cover",
                         p.strategy, p.secagg ? "secure aggregation (plan.secagg)" : "DP (plan.dp_clip)");
    if (p.secagg && !p.label_stats && strcmp(p.strategy, "fednova") == 0)
        return af_seterr(AF_EINVAL, "plan.strategy: fednova cannot be combined with secure "
                                    "aggregation (its tau is per device)");
    fed_strategy *s = NULL;
    if ((rc = fed_strategy_create(p.strategy, p.strategy_opts, m->n_params, &s)))
        return af_preerr(AF_EINVAL, "plan.strategy/strategy_opts");
    /* a commit has min_reports to srv_plan_quota reports: krum's f and m must fit them all */
    if (fed_strategy_needs_updates(s) &&
        ((rc = fed_strategy_check_updates(s, (size_t)p.min_reports)) ||
         (rc = fed_strategy_check_updates(s, (size_t)srv_plan_quota(&p))))) {
        fed_strategy_free(s);
        return af_preerr(AF_EINVAL, "plan.strategy_opts with min_reports %d", p.min_reports);
    }
    fed_strategy_free(s);
    *out = p;
    return 0;
}

cJSON *srv_plan_to_json(const srv_plan *p)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    int ok = cJSON_AddStringToObject(j, "strategy", p->strategy) &&
             cJSON_AddStringToObject(j, "strategy_opts", p->strategy_opts) &&
             cJSON_AddNumberToObject(j, "rounds", p->rounds) &&
             cJSON_AddNumberToObject(j, "devices_per_round", p->devices_per_round) &&
             cJSON_AddNumberToObject(j, "min_reports", p->min_reports) &&
             cJSON_AddNumberToObject(j, "over_selection", p->over_selection) &&
             cJSON_AddNumberToObject(j, "round_deadline_s", p->round_deadline_s) &&
             cJSON_AddNumberToObject(j, "local_epochs", p->local_epochs) &&
             cJSON_AddNumberToObject(j, "batch", p->batch) &&
             cJSON_AddStringToObject(j, "optimizer", p->optimizer) &&
             cJSON_AddNumberToObject(j, "lr", p->lr) &&
             cJSON_AddNumberToObject(j, "momentum", p->momentum) &&
             cJSON_AddNumberToObject(j, "eval_every", p->eval_every) &&
             cJSON_AddNumberToObject(j, "max_update_norm", p->max_update_norm) &&
             cJSON_AddStringToObject(j, "dataset", p->dataset) &&
             cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    if (ok && p->dp_clip > 0) /* DP fields only when on: a plain plan's JSON is unchanged */
        ok = cJSON_AddNumberToObject(j, "dp_clip", p->dp_clip) &&
             cJSON_AddNumberToObject(j, "dp_noise", p->dp_noise) &&
             cJSON_AddNumberToObject(j, "dp_delta", p->dp_delta) &&
             cJSON_AddNumberToObject(j, "dp_target_epsilon", p->dp_target_epsilon) &&
             cJSON_AddNumberToObject(j, "dp_population", (double)p->dp_population);
    if (ok && p->dp_clip > 0 && p->dp_adaptive_quantile > 0)
        ok = cJSON_AddNumberToObject(j, "dp_adaptive_quantile", p->dp_adaptive_quantile) &&
             cJSON_AddNumberToObject(j, "dp_adaptive_lr", p->dp_adaptive_lr) &&
             cJSON_AddNumberToObject(j, "dp_adaptive_count_noise", p->dp_adaptive_count_noise);
    if (ok && p->label_stats)
        ok = cJSON_AddStringToObject(j, "kind", "label_stats") &&
             cJSON_AddNumberToObject(j, "stats_bound", p->stats_bound) &&
             cJSON_AddNumberToObject(j, "stats_noise", p->stats_noise) &&
             cJSON_AddNumberToObject(j, "dp_delta", p->dp_delta);
    if (ok && p->secagg)
        ok = cJSON_AddTrueToObject(j, "secagg") &&
             cJSON_AddNumberToObject(j, "secagg_threshold", p->secagg_threshold) &&
             (p->label_stats ||
              (cJSON_AddNumberToObject(j, "secagg_range", p->secagg_range) &&
               cJSON_AddNumberToObject(j, "secagg_max_samples", p->secagg_max_samples)));
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

int srv_plan_quota(const srv_plan *p)
{
    double q = ceil(p->devices_per_round * p->over_selection - 1e-9);
    return q < p->devices_per_round ? p->devices_per_round : (int)q;
}

size_t srv_plan_memory(const nn_model *m, const srv_plan *p)
{
    enum { EVAL_BATCH = 64 }; /* the device library's evaluation batch */
    size_t sum_out = m->layers[0].in_n, max_out = m->layers[0].in_n, scratch = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *l = &m->layers[i];
        sum_out += l->out_n;
        if (l->out_n > max_out)
            max_out = l->out_n;
        if (l->kind == NN_CONV2D) {
            /* im2col: (out_h·out_w) × (in_c·k_h·k_w) per sample */
            size_t s = (size_t)l->out_h * l->out_w * l->geo.c * l->geo.kh * l->geo.kw;
            if (s > scratch)
                scratch = s;
        }
    }
    /* activations + max-pool arguments + two gradient planes + scratch, per sample */
    size_t per_sample = 2 * sum_out + 2 * max_out + scratch, batch = (size_t)p->batch;
    size_t opt_state = strcmp(p->optimizer, "adam") == 0 ? 2 : p->momentum > 0 ? 1 : 0;
    /* params, received copy, update, optimizer state, one gradient buffer */
    size_t floats = m->n_params * (4 + opt_state);
    floats += batch * per_sample + batch * m->layers[0].in_n;
    floats += (size_t)EVAL_BATCH * (per_sample + m->layers[0].in_n);
    return floats * sizeof(float);
}

double srv_plan_seconds(const nn_model *m, const srv_plan *p, double samples, double flops_per_s)
{
    double rate = flops_per_s > 0 ? flops_per_s : SRV_DEVICE_FLOPS;
    return 3.0 * m->flops_fwd * samples * p->local_epochs / rate;
}

int srv_schema_parse(const cJSON *j, const char *what, srv_schema *out)
{
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(j))
        return af_seterr(AF_EINVAL, "%s: expected a schema object {\"name\", \"kind\", \"shape\", "
                                    "\"classes\"}", what);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (!cJSON_IsString(name) || !name->valuestring[0] ||
        strlen(name->valuestring) >= sizeof out->name)
        return af_seterr(AF_EINVAL, "%s.name: expected a non-empty string of at most %zu "
                                    "characters", what, sizeof out->name - 1);
    snprintf(out->name, sizeof out->name, "%s", name->valuestring);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "kind");
    if (kind && (!cJSON_IsString(kind) || (strcmp(kind->valuestring, "image") != 0 &&
                                           strcmp(kind->valuestring, "tabular") != 0)))
        return af_seterr(AF_EINVAL, "%s.kind: expected \"image\" or \"tabular\"", what);
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    int nd = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : 0, d[3] = {0, 0, 0};
    if (nd < 1 || nd > 3)
        return af_seterr(AF_EINVAL, "%s.shape: expected [C,H,W], [H,W] or [features]", what);
    for (int i = 0; i < nd; i++) {
        const cJSON *x = cJSON_GetArrayItem(shape, i);
        if (!cJSON_IsNumber(x) || x->valuedouble < 1 || x->valuedouble > 1e6 ||
            x->valuedouble != floor(x->valuedouble))
            return af_seterr(AF_EINVAL, "%s.shape[%d]: expected a positive integer", what, i);
        d[i] = (int)x->valuedouble;
    }
    /* the same normalisation as a spec's "input" (nn/model.c) */
    out->c = nd == 3 ? d[0] : 1;
    out->h = nd == 3 ? d[1] : nd == 2 ? d[0] : 1;
    out->w = nd == 3 ? d[2] : nd == 2 ? d[1] : d[0];
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(j, "classes");
    if (cl) {
        if (!cJSON_IsNumber(cl) || cl->valuedouble < 1 || cl->valuedouble > 100000 ||
            cl->valuedouble != floor(cl->valuedouble))
            return af_seterr(AF_EINVAL, "%s.classes: expected a positive integer", what);
        out->classes = (int)cl->valuedouble;
    }
    return 0;
}

int srv_schema_matches(const srv_schema *have, const srv_plan *p, const nn_model *m)
{
    return strcmp(have->name, p->dataset) == 0 && have->c == m->in_c && have->h == m->in_h &&
           have->w == m->in_w && (have->classes == 0 || have->classes == m->n_classes);
}
