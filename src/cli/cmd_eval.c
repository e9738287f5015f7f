/* cmd_eval.c — `artificien eval`, `predict` and `inspect`: read-only commands on a spec or a
 * checkpoint. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/err.h"
#include "core/fileio.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Loads a checkpoint; `spec` (may be NULL) is a spec file for checkpoints without one. */
static int load_model(const char *cmd, const char *path, const char *spec, nn_model **m)
{
    char *txt = NULL;
    size_t len;
    if (spec && af_read_file(spec, &txt, &len))
        return cli_fail(cmd, "%s", af_errmsg());
    int rc = nn_checkpoint_load(path, txt, m);
    free(txt);
    if (rc)
        return cli_fail(cmd, "%s", af_errmsg());
    return 0;
}

static int check_fit(const char *cmd, const nn_model *m, const data_dataset *ds)
{
    if (m->layers[0].in_n != ds->sample_size || m->n_classes != ds->schema.n_classes)
        return cli_fail(cmd, "model takes %zu inputs and gives %d classes; dataset '%s' has %zu and %d",
                        m->layers[0].in_n, m->n_classes, ds->schema.name, ds->sample_size,
                        ds->schema.n_classes);
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *spec = NULL, *split = "test";
    int json = 0, threads = 1;
    const arg_opt opts[] = {
        {"model", ARG_STR, &model, "checkpoint (.safetensors), required"},
        {"spec", ARG_STR, &spec, "model spec, for checkpoints that carry none (e.g. from PyTorch)"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"split", ARG_STR, &split, "test or train (default test)"},
        {"threads", ARG_INT, &threads, "threads (default 1)"},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("eval", "--model MODEL.safetensors [options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!model)
        return cli_fail("eval", "--model is required");
    if (threads < 1 || threads > 64)
        return cli_fail("eval", "--threads must be in [1, 64]");
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "test") != 0)
        return cli_fail("eval", "--split must be test or train, got '%s'", split);
    nn_model *m;
    if (load_model("eval", model, spec, &m))
        return 1;
    data_dataset *ds;
    if (data_load_fashion_mnist_u8(data, train, 0.2860f, 0.3530f, 0, &ds)) {
        nn_model_free(m);
        return cli_fail("eval", "%s", af_errmsg());
    }
    int rc = check_fit("eval", m, ds);
    train_eval ev;
    if (!rc && train_evaluate_simple(m, ds, NULL, ds->n, threads, &ev))
        rc = cli_fail("eval", "%s", af_errmsg());
    if (!rc) {
        if (!json)
            cli_print_eval(stdout, &ev, &ds->schema);
        else {
            cli_json_eval(stdout, &ev);
            putchar('\n');
        }
    }
    data_dataset_free(ds);
    nn_model_free(m);
    return rc;
}

int cmd_predict(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *spec = NULL, *split = "test";
    int index = 0, json = 0;
    const arg_opt opts[] = {
        {"model", ARG_STR, &model, "checkpoint (.safetensors), required"},
        {"spec", ARG_STR, &spec, "model spec, for checkpoints that carry none"},
        {"data", ARG_STR, &data, "dataset: fashion-mnist or a folder of IDX files"},
        {"split", ARG_STR, &split, "test or train (default test)"},
        {"index", ARG_INT, &index, "sample index (default 0)"},
        {"json", ARG_FLAG, &json, "print a JSON object as the last line of stdout"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("predict", "--model MODEL.safetensors --index N [options]", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!model)
        return cli_fail("predict", "--model is required");
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "test") != 0)
        return cli_fail("predict", "--split must be test or train, got '%s'", split);
    nn_model *m;
    if (load_model("predict", model, spec, &m))
        return 1;
    data_dataset *ds;
    if (data_load_fashion_mnist_u8(data, train, 0.2860f, 0.3530f, 0, &ds)) {
        nn_model_free(m);
        return cli_fail("predict", "%s", af_errmsg());
    }
    int rc = check_fit("predict", m, ds);
    if (!rc && (index < 0 || (size_t)index >= ds->n))
        rc = cli_fail("predict", "--index %d out of range [0, %zu)", index, ds->n);
    nn_ws *ws = NULL;
    float *sample = NULL; /* the sample as floats, when the dataset holds bytes */
    if (!rc && (!(ws = nn_ws_create(m, 1)) || !(sample = malloc(sizeof(float) * ds->sample_size))))
        rc = cli_fail("predict", "out of memory");
    if (!rc) {
        const float *z = nn_forward(m, ws, data_rows(ds, (size_t)index, 1, sample), 1, 0, 0);
        const int k = m->n_classes;
        double p[256], mx = z[0], sum = 0;
        for (int c = 1; c < k; c++)
            if (z[c] > mx)
                mx = z[c];
        for (int c = 0; c < k; c++)
            sum += p[c] = exp(z[c] - mx);
        int best = 0;
        for (int c = 0; c < k; c++) {
            p[c] /= sum;
            if (p[c] > p[best])
                best = c;
        }
        int truth = ds->y[index];
        if (!json) {
            printf("sample %d of %s (%s): true class %d %s\n", index, ds->schema.name, split, truth,
                   ds->schema.class_names[truth]);
            printf("predicted %d %s with probability %.4f — %s\n\n", best,
                   ds->schema.class_names[best], p[best], best == truth ? "correct" : "wrong");
            for (int c = 0; c < k; c++) {
                int bar = (int)(p[c] * 40 + 0.5);
                printf("  %d %-12s %6.4f %.*s\n", c, ds->schema.class_names[c], p[c], bar,
                       "########################################");
            }
        } else {
            printf("{\"index\": %d, \"label\": %d, \"predicted\": %d, \"class\": \"%s\", \"probabilities\": [",
                   index, truth, best, ds->schema.class_names[best]);
            for (int c = 0; c < k; c++)
                printf("%s%.6f", c ? ", " : "", p[c]);
            printf("]}\n");
        }
    }
    free(sample);
    nn_ws_free(ws);
    data_dataset_free(ds);
    nn_model_free(m);
    return rc;
}

int cmd_inspect(int argc, char **argv)
{
    const char *spec = NULL;
    int json = 0;
    const arg_opt opts[] = {
        {"spec", ARG_STR, &spec, "model spec, for checkpoints that carry none"},
        {"json", ARG_FLAG, &json, "print the canonical spec and metadata as JSON"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("inspect", "SPEC.json | MODEL.safetensors", opts, argc, argv, pos, &npos, 1);
    if (r)
        return r > 0 ? 0 : 2;
    if (npos != 1)
        return cli_fail("inspect", "give one SPEC.json or MODEL.safetensors");
    nn_model *m;
    int is_ckpt = ends_with(pos[0], ".safetensors");
    if (is_ckpt) {
        if (load_model("inspect", pos[0], spec, &m))
            return 1;
    } else if (nn_model_from_file(pos[0], NULL, &m)) {
        return cli_fail("inspect", "%s", af_errmsg());
    }
    if (json) {
        printf("{\"spec\": %s, \"params\": %zu, \"flops\": %.0f}\n", m->spec_json, m->n_params, m->flops_fwd);
    } else {
        char buf[16384];
        nn_model_summary(m, buf, sizeof buf);
        fputs(buf, stdout);
        if (is_ckpt) {
            st_file f;
            if (st_read(pos[0], &f) == 0) {
                printf("  metadata:\n");
                for (int i = 0; i < f.n_meta; i++)
                    if (strcmp(f.meta_keys[i], "spec") != 0)
                        printf("    %-16s %s\n", f.meta_keys[i], f.meta_vals[i]);
                st_free(&f);
            }
        }
    }
    nn_model_free(m);
    return 0;
}
