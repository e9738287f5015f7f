/* args.c — option parsing for the `artificien` subcommands (see args.h). */
#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void args_help(const char *cmd, const char *usage, const arg_opt *opts)
{
    printf("usage: artificien %s %s\n\noptions:\n", cmd, usage);
    for (const arg_opt *o = opts; o->name; o++) {
        const char *meta = o->type == ARG_FLAG ? "" : o->type == ARG_STR ? " VALUE" : " N";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", o->name, meta);
        printf("  %-24s %s\n", left, o->help);
    }
    printf("  %-24s %s\n", "--help", "show this help");
}

static int set(const char *cmd, const arg_opt *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case ARG_STR:
        *(const char **)o->ptr = v;
        return 0;
    case ARG_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < -2147483647L || x > 2147483647L) {
            fprintf(stderr, "artificien %s: --%s expects an integer, got '%s'\n", cmd, o->name, v);
            return -1;
        }
        *(int *)o->ptr = (int)x;
        return 0;
    }
    case ARG_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno || v[0] == '-') {
            fprintf(stderr, "artificien %s: --%s expects a non-negative integer, got '%s'\n", cmd, o->name, v);
            return -1;
        }
        *(uint64_t *)o->ptr = (uint64_t)x;
        return 0;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) {
            fprintf(stderr, "artificien %s: --%s expects a number, got '%s'\n", cmd, o->name, v);
            return -1;
        }
        *(double *)o->ptr = x;
        return 0;
    }
    case ARG_FLAG:
        *(int *)o->ptr = 1;
        return 0;
    }
    return -1;
}

int args_parse(const char *cmd, const char *usage, const arg_opt *opts, int argc, char **argv,
               char **pos, int *npos, int max_pos)
{
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_help(cmd, usage, opts);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
            if (*npos >= max_pos) {
                fprintf(stderr, "artificien %s: unexpected argument '%s' (see --help)\n", cmd, a);
                return -1;
            }
            pos[(*npos)++] = argv[i];
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const arg_opt *o = NULL;
        for (const arg_opt *p = opts; p->name; p++)
            if (strlen(p->name) == nl && strncmp(p->name, name, nl) == 0)
                o = p;
        if (!o) {
            fprintf(stderr, "artificien %s: unknown option '--%.*s' (see --help)\n", cmd, (int)nl, name);
            return -1;
        }
        const char *v;
        if (o->type == ARG_FLAG) {
            if (eq) {
                fprintf(stderr, "artificien %s: --%s takes no value\n", cmd, o->name);
                return -1;
            }
            v = "1";
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "artificien %s: --%s needs a value\n", cmd, o->name);
            return -1;
        }
        if (set(cmd, o, v))
            return -1;
    }
    return 0;
}
