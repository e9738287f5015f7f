/* main.c — the `artificien` command: dispatches to a subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"train", cmd_train, "train a model centrally on a dataset"},
    {"eval", cmd_eval, "evaluate a checkpoint: loss, accuracy, confusion matrix, P/R/F1"},
    {"predict", cmd_predict, "classify one sample of a dataset"},
    {"inspect", cmd_inspect, "show a spec or checkpoint: layers, output shapes, parameters"},
    {"sweep", cmd_sweep, "train every combination of hyperparameter lists, rank the runs"},
    {"sim", cmd_sim, "simulate federated learning over many devices with skewed data"},
    {"privacy", cmd_privacy, "differential privacy: epsilon of a DP-FedAvg run, or the noise a budget needs"},
    {"serve", cmd_serve, "run the coordinator: HTTP API, rounds, SQLite (docs/coordinator.md)"},
    {"worker", cmd_worker, "a device process: holds a data shard, trains for a coordinator (docs/client.md)"},
    {"project", cmd_project, "model owner: create a project, watch its rounds, pull the trained model"},
    {"admin", cmd_admin, "coordinator admin: create owners and enrolment secrets"},
    {"bench", cmd_bench, "measure training and inference images/s and the BLAS GEMM rate"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: artificien COMMAND [options]   (artificien COMMAND --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv)
{
    /* BLIS 0.9 does not know Zen 5 and falls back to its slow "generic" kernels; on a CPU
     * with AVX-512 its Skylake-X kernels are right (measured 5x faster at 512^3). Only the
     * layers without specialised kernels use BLIS; an explicit setting is respected. */
    if (!getenv("BLIS_ARCH_TYPE") && __builtin_cpu_supports("avx512f"))
        setenv("BLIS_ARCH_TYPE", "skx", 0);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 2, argv + 2);
    /* one line, as for every other error: the reason and what would have been valid */
    fprintf(stderr, "artificien: unknown command '%s' (commands:", argv[1]);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        fprintf(stderr, "%s %s", i ? "," : "", cmds[i].name);
    fprintf(stderr, "; see artificien --help)\n");
    return 2;
}
