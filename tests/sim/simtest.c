/* simtest.c — shared helpers of the simulator tests (see simtest.h). */
#include "simtest.h"

#include <stdio.h>
#include <string.h>

#include "core/err.h"

int simtest_load(const char *who, size_t n_train, size_t n_test, data_dataset **train,
                 data_dataset **test, nn_model **model)
{
    if (*model)
        return 0;
    int rc = data_load_fashion_mnist("fashion-mnist", 1, 0.2860f, 0.3530f, n_train, train);
    if (!rc)
        rc = data_load_fashion_mnist("fashion-mnist", 0, 0.2860f, 0.3530f, n_test, test);
    if (!rc)
        rc = nn_model_from_file("models/fashion_cnn.json", NULL, model);
    if (!rc)
        nn_model_init(*model, 1);
    if (rc)
        fprintf(stderr, "%s setup: %s\n", who, af_errmsg());
    return rc;
}

int simtest_run(const sim_cfg *cfg, const nn_model *model, const data_dataset *train,
                const data_dataset *test, sim_round *rounds, int *ran, float *params)
{
    sim *s;
    int rc = sim_create(cfg, model, train, test, &s);
    if (rc)
        return rc;
    int r = 1;
    for (; r <= cfg->rounds && !rc && sim_budget_allows(s, NULL); r++) {
        sim_round tmp;
        rc = sim_run_round(s, r, rounds ? &rounds[r - 1] : &tmp);
    }
    if (ran)
        *ran = r - 1;
    if (!rc && params)
        memcpy(params, sim_model(s)->params, sizeof(float) * model->n_params);
    sim_free(s);
    return rc;
}
