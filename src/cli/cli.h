/* cli.h — the subcommands of `artificien` and the helpers they share (progress display,
 * evaluation tables, JSON/CSV run outputs). Layer `cli`: may use every layer; the only
 * code that prints to stdout and chooses exit statuses. */
#ifndef AF_CLI_CLI_H
#define AF_CLI_CLI_H

#include <stdio.h>

#include "data/dataset.h"
#include "train/train.h"

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sim(int argc, char **argv);
int cmd_privacy(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_project(int argc, char **argv);
int cmd_admin(int argc, char **argv);

/* "artificien CMD: message" on stderr; returns 1 (the exit status for errors). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Progress display: a redrawn bar on a terminal, otherwise a plain line every ~2 seconds. */
typedef struct cli_progress {
    const char *label;   /* "epoch 1/5" */
    int tty, quiet;
    double last;
    long images_per_step;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label, long images_per_step, int quiet);
/* train_step_cb-compatible */
int cli_progress_cb(void *user, long step, long steps, double loss, double seconds);
void cli_progress_done(cli_progress *p);

/* Prints the accuracy/loss line, the confusion matrix and per-class P/R/F1 with class names. */
void cli_print_eval(FILE *f, const train_eval *e, const data_schema *s);
/* Appends {"accuracy":…,"loss":…,"confusion":[[…],…]} (no newline) to f. */
void cli_json_eval(FILE *f, const train_eval *e);

/* Resolves --model for training: a spec path (.json), or the default tutorial CNN. */
const char *cli_default_spec(void);

#endif
