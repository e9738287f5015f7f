/* cmd_project.c — the model owner's and the admin's commands against a coordinator:
 *   artificien project create|list|status|pull|stats   (an owner key: --key or --key-file)
 *   artificien admin create-owner|create-secret   (the admin key file next to the database)
 * Layer `cli`: HTTP through client/http.h; prints results on stdout (ids and keys alone on a
 * line, so scripts can capture them), errors on stderr. Exit 0 ok, 1 on errors, 2 on usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "client/http.h"
#include "core/err.h"
#include "core/fileio.h"
#include "nn/checkpoint.h"

/* Reads a key: the --key value, else the first line of --key-file. 0 or 1 (message printed). */
static int read_key(const char *cmd, const char *key, const char *key_file, char *out, size_t cap)
{
    if (key) {
        snprintf(out, cap, "%s", key);
    } else if (key_file) {
        char *txt;
        size_t len;
        if (af_read_file(key_file, &txt, &len))
            return cli_fail(cmd, "%s", af_errmsg());
        txt[strcspn(txt, "\r\n")] = 0;
        snprintf(out, cap, "%s", txt);
        free(txt);
    } else {
        return cli_fail(cmd, "--key or --key-file is required");
    }
    if (!out[0] || strchr(out, ' '))
        return cli_fail(cmd, "the key is empty or has spaces");
    return 0;
}

/* One JSON exchange. 0 with *out (the parsed answer; caller frees) when the status is
 * `expect`; otherwise 1 after printing the server's error. */
static int call_json(const char *cmd, const char *server, const char *key, const char *method,
                     const char *path, const char *body, long expect, cJSON **out)
{
    *out = NULL;
    client_http *h;
    if (client_http_create(server, 60, &h))
        return cli_fail(cmd, "%s", af_errmsg());
    client_http_resp r;
    int rc = client_http_request(h, method, path, key, body ? "application/json" : NULL, body,
                                 body ? strlen(body) : 0, NULL, (size_t)64 << 20, &r);
    client_http_free(h);
    if (rc)
        return cli_fail(cmd, "%s", af_errmsg());
    if (r.status != expect) {
        client_http_status_error(&r, method, path);
        client_http_resp_free(&r);
        return cli_fail(cmd, "%s", af_errmsg());
    }
    *out = cJSON_ParseWithLength(r.body, r.len);
    client_http_resp_free(&r);
    if (!*out)
        return cli_fail(cmd, "%s %s: the answer is not JSON", method, path);
    return 0;
}

static double num(const cJSON *o, const char *k, double dflt)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(j) ? j->valuedouble : dflt;
}

static const char *str(const cJSON *o, const char *k, const char *dflt)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(j) ? j->valuestring : dflt;
}

/* Reads a JSON file into a cJSON object, or prints why not. */
static cJSON *read_json_file(const char *cmd, const char *what, const char *path)
{
    char *txt;
    size_t len;
    if (af_read_file(path, &txt, &len)) {
        cli_fail(cmd, "%s", af_errmsg());
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        cli_fail(cmd, "%s %s: not a JSON object", what, path);
        return NULL;
    }
    return j;
}

static int project_create(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *key_file = NULL, *model = NULL, *plan = NULL;
    const char *name = NULL, *init = NULL;
    int json = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"key", ARG_STR, &key, "owner API key"},
        {"key-file", ARG_STR, &key_file, "file holding the owner API key"},
        {"model", ARG_STR, &model, "model spec JSON (required)"},
        {"plan", ARG_STR, &plan, "training plan JSON (required; docs/api.md)"},
        {"name", ARG_STR, &name, "project name (default: the spec's name)"},
        {"init", ARG_STR, &init, "initial weights (.safetensors) instead of the plan's seeded init"},
        {"json", ARG_FLAG, &json, "print the server's JSON answer instead of the id"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("project create", "--server URL --key KEY --model SPEC.json --plan PLAN.json",
                             opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!server || !model || !plan) {
        cli_fail("project create", "--server, --model and --plan are required");
        return 2;
    }
    char k[256];
    if (read_key("project create", key, key_file, k, sizeof k))
        return 1;
    cJSON *spec = read_json_file("project create", "model spec", model);
    cJSON *pl = spec ? read_json_file("project create", "plan", plan) : NULL;
    if (!pl) {
        cJSON_Delete(spec);
        return 1;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name ? name : str(spec, "name", "project"));
    cJSON_AddItemToObject(body, "spec", spec);
    cJSON_AddItemToObject(body, "plan", pl);
    char *txt = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    cJSON *ans;
    r = call_json("project create", server, k, "POST", "/v1/projects", txt, 201, &ans);
    free(txt);
    if (r)
        return 1;
    long id = (long)num(ans, "id", -1);
    if (init) {
        char *w = NULL;
        size_t len = 0;
        char path[64];
        snprintf(path, sizeof path, "/v1/projects/%ld/checkpoint", id);
        client_http *h = NULL;
        client_http_resp hr = {0};
        int rc = af_read_file(init, &w, &len);
        if (!rc && !(rc = client_http_create(server, 60, &h)))
            rc = client_http_request(h, "PUT", path, k, "application/octet-stream", w, len, NULL, 65536, &hr);
        if (!rc && hr.status != 200)
            rc = client_http_status_error(&hr, "PUT", path);
        if (rc)
            cli_fail("project create", "project %ld created, but the initial weights were not: %s", id, af_errmsg());
        client_http_resp_free(&hr);
        client_http_free(h);
        free(w);
        if (rc) {
            cJSON_Delete(ans);
            return 1;
        }
    }
    if (json) {
        char *s = cJSON_PrintUnformatted(ans);
        printf("%s\n", s);
        free(s);
    } else {
        printf("%ld\n", id);
    }
    cJSON_Delete(ans);
    return 0;
}

static int project_list(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *key_file = NULL;
    int json = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"key", ARG_STR, &key, "owner API key"},
        {"key-file", ARG_STR, &key_file, "file holding the owner API key"},
        {"json", ARG_FLAG, &json, "print the server's JSON"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("project list", "--server URL --key KEY", opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!server) {
        cli_fail("project list", "--server is required");
        return 2;
    }
    char k[256];
    cJSON *ans;
    if (read_key("project list", key, key_file, k, sizeof k) ||
        call_json("project list", server, k, "GET", "/v1/projects", NULL, 200, &ans))
        return 1;
    if (json) {
        char *s = cJSON_PrintUnformatted(ans);
        printf("%s\n", s);
        free(s);
    } else {
        printf("%6s  %-24s  %-8s  %6s  %7s\n", "id", "name", "status", "round", "version");
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(ans, "projects"))
        {
            double rd = num(p, "round", -1);
            char rs[16] = "-";
            if (rd >= 0)
                snprintf(rs, sizeof rs, "%.0f", rd);
            printf("%6.0f  %-24.24s  %-8s  %6s  %7.0f\n", num(p, "id", -1), str(p, "name", ""),
                   str(p, "status", "?"), rs, num(p, "version", 0));
        }
    }
    cJSON_Delete(ans);
    return 0;
}

static void print_status(const cJSON *s)
{
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(s, "plan");
    printf("project %.0f '%s': %s, version %.0f of %.0f rounds, %.0f parameters\n", num(s, "id", -1),
           str(s, "name", ""), str(s, "status", "?"), num(s, "version", 0), num(plan, "rounds", 0),
           num(s, "params", 0));
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(s, "round");
    if (cJSON_IsObject(rd)) {
        double left = num(rd, "deadline_at", 0) - (double)time(NULL);
        printf("round %.0f attempt %.0f %s: %.0f/%.0f reports (%.0f selected, %.0f refused), deadline in %.0f s\n",
               num(rd, "number", 0), num(rd, "attempt", 0), str(rd, "state", "?"),
               num(rd, "reports", 0), num(plan, "devices_per_round", 0), num(rd, "selected", 0),
               num(rd, "refused", 0), left > 0 ? left : 0);
        const cJSON *sa = cJSON_GetObjectItemCaseSensitive(rd, "secagg");
        if (cJSON_IsObject(sa))
            printf("secure aggregation: phase %s, %.0f advertised, %.0f shared keys, %.0f masked "
                   "inputs, %.0f unmask answers (threshold %.0f)\n",
                   str(rd, "phase", "?"), num(sa, "u1", 0), num(sa, "u2", 0), num(sa, "u3", 0),
                   num(sa, "unmasked", 0), num(sa, "t", 0));
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(s, "epsilon");
    if (cJSON_IsNumber(eps))
        printf("differential privacy: epsilon %.4g at delta %g spent, clip norm now %.4g\n",
               eps->valuedouble, num(plan, "dp_delta", 0), num(s, "dp_clip", NAN));
    printf("\n%5s %7s  %-9s %7s %7s  %10s  %9s  %9s  %8s  %7s  %7s\n", "round", "attempt", "state",
           "reports", "refused", "train_loss", "eval_acc", "eval_loss", "eval_n", "dev_p10", "dev_min");
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(s, "rounds"))
    {
        double tl = num(x, "train_loss", NAN), ea = num(x, "eval_accuracy", NAN), el = num(x, "eval_loss", NAN);
        printf("%5.0f %7.0f  %-9s %7.0f %7.0f  ", num(x, "number", 0), num(x, "attempt", 0),
               str(x, "state", "?"), num(x, "reports", 0), num(x, "refused", 0));
        isnan(tl) ? printf("%10s  ", "-") : printf("%10.4f  ", tl);
        isnan(ea) ? printf("%9s  ", "-") : printf("%9.4f  ", ea);
        isnan(el) ? printf("%9s  ", "-") : printf("%9.4f  ", el);
        printf("%8.0f", num(x, "eval_samples", 0));
        const cJSON *da = cJSON_GetObjectItemCaseSensitive(x, "device_accuracy");
        if (cJSON_IsObject(da))
            printf("  %7.4f  %7.4f\n", num(da, "p10", NAN), num(da, "min", NAN));
        else
            printf("  %7s  %7s\n", "-", "-");
    }
    const cJSON *conf = cJSON_GetObjectItemCaseSensitive(s, "population_confusion");
    if (cJSON_IsArray(conf) && cJSON_GetArraySize(conf) > 0) {
        printf("\npopulation confusion matrix (devices' held-out data; rows true, columns predicted):\n");
        const cJSON *row;
        int i = 0;
        cJSON_ArrayForEach(row, conf)
        {
            printf("%4d |", i++);
            const cJSON *v;
            cJSON_ArrayForEach(v, row) printf(" %6.0f", cJSON_IsNumber(v) ? v->valuedouble : 0);
            printf("\n");
        }
    }
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(s, "label_stats");
    if (cJSON_IsObject(ls)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(ls, "epsilon");
        printf("\nlabel statistics of %.0f devices (noisy counts, each device scaled to at most "
               "%g samples; noise std %.3g per count; ",
               num(ls, "devices", 0), num(ls, "bound", 0), num(ls, "count_std", 0));
        cJSON_IsNumber(e) ? printf("epsilon %.3g at delta %g):\n", e->valuedouble, num(ls, "delta", 0))
                          : printf("no noise: not differentially private):\n");
        printf("%5s  %10s  %7s  %7s\n", "class", "count", "share", "± std");
        const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(ls, "count");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(ls, "share");
        const cJSON *sd = cJSON_GetObjectItemCaseSensitive(ls, "share_std");
        for (int c = 0; c < cJSON_GetArraySize(cnt); c++) {
            const cJSON *a = cJSON_GetArrayItem(sh, c), *b = cJSON_GetArrayItem(sd, c);
            printf("%5d  %10.1f  %7.4f  %7.4f\n", c, cJSON_GetArrayItem(cnt, c)->valuedouble,
                   cJSON_IsNumber(a) ? a->valuedouble : NAN, cJSON_IsNumber(b) ? b->valuedouble : NAN);
        }
        printf("distance from uniform (total variation): %.4f (noise alone adds about %.4f)\n",
               num(ls, "tv_uniform", NAN), num(ls, "tv_noise", NAN));
    }
}

/* A project's status: the server's JSON on one line (--json), or print_status's text. */
static void print_status_or_json(const cJSON *ans, int json)
{
    if (!json) {
        print_status(ans);
        return;
    }
    char *txt = cJSON_PrintUnformatted(ans);
    printf("%s\n", txt ? txt : "null");
    free(txt);
}

static int project_status(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *key_file = NULL;
    int json = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"key", ARG_STR, &key, "owner API key"},
        {"key-file", ARG_STR, &key_file, "file holding the owner API key"},
        {"json", ARG_FLAG, &json, "print the server's JSON status on one line"},
        {0},
    };
    char *pos[2];
    int npos, r = args_parse("project status", "--server URL --key KEY ID [--json]", opts, argc, argv, pos, &npos, 1);
    if (r)
        return r > 0 ? 0 : 2;
    char *end;
    long id = npos == 1 ? strtol(pos[0], &end, 10) : -1;
    if (!server || npos != 1 || *end || id < 0) {
        cli_fail("project status", "--server and one project ID are required");
        return 2;
    }
    char k[256], path[64];
    snprintf(path, sizeof path, "/v1/projects/%ld", id);
    cJSON *ans;
    if (read_key("project status", key, key_file, k, sizeof k) ||
        call_json("project status", server, k, "GET", path, NULL, 200, &ans))
        return 1;
    print_status_or_json(ans, json);
    cJSON_Delete(ans);
    return 0;
}

/* A population-statistics query (a label_stats project, docs/api.md) in one command: the
 * devices holding the model's data send their label counts through secure aggregation with
 * DP noise; with --wait the release is printed once the round commits. */
static int project_stats(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *key_file = NULL, *model = NULL, *name = NULL;
    const char *dataset = "fashion-mnist";
    int devices = 20, min_devices = 0, json = 0;
    double bound = 100, noise = 1, delta = 1e-5, deadline = 60, wait = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"key", ARG_STR, &key, "owner API key"},
        {"key-file", ARG_STR, &key_file, "file holding the owner API key"},
        {"model", ARG_STR, &model, "model spec JSON: which devices (input shape, classes) to ask (required)"},
        {"dataset", ARG_STR, &dataset, "the devices' dataset schema name (default fashion-mnist)"},
        {"devices", ARG_INT, &devices, "devices to ask (default 20)"},
        {"min-devices", ARG_INT, &min_devices, "fewest answers to release anything (default 80% of --devices)"},
        {"bound", ARG_FLOAT, &bound, "each device's counts are scaled to sum to at most this (default 100)"},
        {"noise", ARG_FLOAT, &noise, "noise multiplier z: the noise std is z x bound (default 1; 0: exact, no DP)"},
        {"delta", ARG_FLOAT, &delta, "delta of the reported epsilon (default 1e-5)"},
        {"deadline", ARG_FLOAT, &deadline, "seconds the round may take (default 60)"},
        {"name", ARG_STR, &name, "project name (default label-stats)"},
        {"wait", ARG_FLOAT, &wait, "wait up to this many seconds for the release and print it"},
        {"json", ARG_FLAG, &json, "with --wait: print the server's JSON status instead"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("project stats", "--server URL --key KEY --model SPEC.json [--devices N] [--wait S]",
                             opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!server || !model) {
        cli_fail("project stats", "--server and --model are required");
        return 2;
    }
    if (devices < 1 || min_devices < 0 || min_devices > devices || !(wait >= 0)) {
        cli_fail("project stats", "--devices must be >= 1, --min-devices in [1, --devices], --wait >= 0");
        return 2;
    }
    char k[256];
    if (read_key("project stats", key, key_file, k, sizeof k))
        return 1;
    cJSON *spec = read_json_file("project stats", "model spec", model);
    if (!spec)
        return 1;
    if (!min_devices)
        min_devices = (int)ceil(0.8 * devices);
    cJSON *body = cJSON_CreateObject(), *pl = cJSON_AddObjectToObject(body, "plan");
    cJSON_AddStringToObject(body, "name", name ? name : "label-stats");
    cJSON_AddItemToObject(body, "spec", spec);
    cJSON_AddStringToObject(pl, "kind", "label_stats");
    cJSON_AddNumberToObject(pl, "rounds", 1);
    cJSON_AddNumberToObject(pl, "devices_per_round", devices);
    cJSON_AddNumberToObject(pl, "min_reports", min_devices);
    cJSON_AddNumberToObject(pl, "over_selection", 1);
    cJSON_AddNumberToObject(pl, "round_deadline_s", deadline);
    cJSON_AddStringToObject(pl, "dataset", dataset);
    cJSON_AddNumberToObject(pl, "stats_bound", bound);
    cJSON_AddNumberToObject(pl, "stats_noise", noise);
    cJSON_AddNumberToObject(pl, "dp_delta", delta);
    char *txt = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    cJSON *ans;
    r = call_json("project stats", server, k, "POST", "/v1/projects", txt, 201, &ans);
    free(txt);
    if (r)
        return 1;
    long id = (long)num(ans, "id", -1);
    cJSON_Delete(ans);
    if (!(wait > 0)) {
        printf("%ld\n", id);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/v1/projects/%ld", id);
    time_t until = time(NULL) + (time_t)ceil(wait);
    for (;;) {
        if (call_json("project stats", server, k, "GET", path, NULL, 200, &ans))
            return 1;
        if (strcmp(str(ans, "status", ""), "done") == 0)
            break;
        cJSON_Delete(ans);
        if (time(NULL) >= until) {
            cli_fail("project stats", "project %ld: no release within %g s (its round waits for "
                                      "%d devices to check in; see project status %ld)",
                     id, wait, min_devices, id);
            return 1;
        }
        struct timespec ts = {0, 500000000L};
        nanosleep(&ts, NULL);
    }
    print_status_or_json(ans, json);
    cJSON_Delete(ans);
    return 0;
}

static int project_pull(int argc, char **argv)
{
    const char *server = NULL, *key = NULL, *key_file = NULL, *out = NULL;
    int round = -1;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"key", ARG_STR, &key, "owner API key"},
        {"key-file", ARG_STR, &key_file, "file holding the owner API key"},
        {"out", ARG_STR, &out, "where to write the safetensors checkpoint (required)"},
        {"round", ARG_INT, &round, "the checkpoint after round R (default: the latest; 0 = initial)"},
        {0},
    };
    char *pos[2];
    int npos, r = args_parse("project pull", "--server URL --key KEY ID --out model.safetensors [--round R]",
                             opts, argc, argv, pos, &npos, 1);
    if (r)
        return r > 0 ? 0 : 2;
    char *end;
    long id = npos == 1 ? strtol(pos[0], &end, 10) : -1;
    if (!server || !out || npos != 1 || *end || id < 0) {
        cli_fail("project pull", "--server, --out and one project ID are required");
        return 2;
    }
    char k[256], path[96];
    if (read_key("project pull", key, key_file, k, sizeof k))
        return 1;
    /* checkpoint version V is the model after V committed rounds */
    if (round >= 0)
        snprintf(path, sizeof path, "/v1/projects/%ld/checkpoints/%d", id, round);
    else
        snprintf(path, sizeof path, "/v1/projects/%ld/checkpoints/latest", id);
    client_http *h;
    if (client_http_create(server, 120, &h))
        return cli_fail("project pull", "%s", af_errmsg());
    client_http_resp hr;
    int rc = client_http_request(h, "GET", path, k, NULL, NULL, 0, NULL, (size_t)1 << 31, &hr);
    client_http_free(h);
    if (rc)
        return cli_fail("project pull", "%s", af_errmsg());
    if (hr.status != 200) {
        client_http_status_error(&hr, "GET", path);
        client_http_resp_free(&hr);
        return cli_fail("project pull", "%s", af_errmsg());
    }
    /* check it is a loadable checkpoint before it replaces anything */
    nn_model *m;
    if (nn_checkpoint_parse(hr.body, hr.len, path, NULL, &m)) {
        client_http_resp_free(&hr);
        return cli_fail("project pull", "%s", af_errmsg());
    }
    const void *bufs[1] = {hr.body};
    size_t lens[1] = {hr.len};
    rc = af_write_file_atomic(out, bufs, lens, 1);
    if (!rc)
        printf("wrote %s: %zu bytes, %zu parameters (%s)\n", out, hr.len, m->n_params,
               hr.etag[0] ? hr.etag : "no etag");
    nn_model_free(m);
    client_http_resp_free(&hr);
    return rc ? cli_fail("project pull", "%s", af_errmsg()) : 0;
}

int cmd_project(int argc, char **argv)
{
    static const char *usage = "usage: artificien project create|list|status|pull|stats [options]   (--help on each)\n";
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "create") == 0)
        return project_create(argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return project_list(argc - 1, argv + 1);
    if (strcmp(argv[0], "stats") == 0)
        return project_stats(argc - 1, argv + 1);
    if (strcmp(argv[0], "status") == 0)
        return project_status(argc - 1, argv + 1);
    if (strcmp(argv[0], "pull") == 0)
        return project_pull(argc - 1, argv + 1);
    cli_fail("project", "unknown subcommand '%s'", argv[0]);
    fputs(usage, stderr);
    return 2;
}

int cmd_admin(int argc, char **argv)
{
    static const char *usage = "usage: artificien admin create-owner|create-secret --server URL "
                               "(--admin-key K | --admin-key-file F) [--name N]\n";
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0) {
        fputs(usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    int owner = strcmp(argv[0], "create-owner") == 0;
    if (!owner && strcmp(argv[0], "create-secret") != 0) {
        cli_fail("admin", "unknown subcommand '%s'", argv[0]);
        fputs(usage, stderr);
        return 2;
    }
    const char *server = NULL, *key = NULL, *key_file = NULL, *name = NULL;
    int json = 0;
    const arg_opt opts[] = {
        {"server", ARG_STR, &server, "coordinator URL (required)"},
        {"admin-key", ARG_STR, &key, "the admin key"},
        {"admin-key-file", ARG_STR, &key_file, "the admin key file (DB.admin-key next to the database)"},
        {"name", ARG_STR, &name, "create-owner: the owner's name (required)"},
        {"json", ARG_FLAG, &json, "print the server's JSON answer"},
        {0},
    };
    const char *cmd = owner ? "admin create-owner" : "admin create-secret";
    char *pos[1];
    int npos, r = args_parse(cmd, "--server URL --admin-key-file F [--name N]", opts, argc - 1, argv + 1, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;
    if (!server || (owner && !name)) {
        cli_fail(cmd, owner ? "--server and --name are required" : "--server is required");
        return 2;
    }
    char k[256];
    if (read_key(cmd, key, key_file, k, sizeof k))
        return 1;
    cJSON *body = cJSON_CreateObject(), *ans;
    if (owner)
        cJSON_AddStringToObject(body, "name", name);
    char *txt = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    r = call_json(cmd, server, k, "POST", owner ? "/v1/owners" : "/v1/enrollment-secrets", txt, 201, &ans);
    free(txt);
    if (r)
        return 1;
    const char *v = str(ans, owner ? "api_key" : "secret", NULL);
    if (json) {
        char *s = cJSON_PrintUnformatted(ans);
        printf("%s\n", s);
        free(s);
    } else if (v) {
        printf("%s\n", v);
    }
    r = v ? 0 : cli_fail(cmd, "the answer has no \"%s\"", owner ? "api_key" : "secret");
    cJSON_Delete(ans);
    return r;
}
