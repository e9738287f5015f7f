/* common.c — progress display and evaluation reports shared by the subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/timer.h"

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "artificien %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

const char *cli_default_spec(void)
{
    static char path[4096];
    /* next to the binary's source tree (build/artificien -> models/), else the cwd */
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 64);
    if (n > 0) {
        path[n] = 0;
        char *slash = strrchr(path, '/');
        if (slash) {
            strcpy(slash, "/../models/fashion_cnn.json");
            if (access(path, R_OK) == 0)
                return path;
            strcpy(slash, "/../share/artificien/models/fashion_cnn.json");
            if (access(path, R_OK) == 0)
                return path;
        }
    }
    return "models/fashion_cnn.json";
}

void cli_progress_init(cli_progress *p, const char *label, long images_per_step, int quiet)
{
    p->label = label;
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->last = af_now();
    p->images_per_step = images_per_step;
}

int cli_progress_cb(void *user, long step, long steps, double loss, double seconds)
{
    cli_progress *p = user;
    if (p->quiet)
        return 0;
    double now = af_now();
    double period = p->tty ? 0.1 : 2.0;
    if (step != steps && now - p->last < period)
        return 0;
    p->last = now;
    double ips = seconds > 0 ? (double)step * p->images_per_step / seconds : 0.0;
    double eta = step > 0 ? seconds / step * (double)(steps - step) : 0.0;
    if (p->tty) {
        int width = 30, fill = (int)((double)width * step / (steps ? steps : 1));
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %ld/%ld  %.0f img/s  loss %.4f  ETA %.1fs  ", p->label, bar,
                step, steps, ips, loss, eta);
    } else {
        fprintf(stderr, "%s: batch %ld/%ld, %.0f img/s, loss %.4f, ETA %.1fs\n", p->label, step,
                steps, ips, loss, eta);
    }
    return 0;
}

void cli_progress_done(cli_progress *p)
{
    if (p->tty && !p->quiet)
        fputc('\n', stderr);
}

void cli_print_eval(FILE *f, const train_eval *e, const data_schema *s)
{
    const int k = e->k;
    double prec[TRAIN_EVAL_MAX_CLASSES], rec[TRAIN_EVAL_MAX_CLASSES], f1[TRAIN_EVAL_MAX_CLASSES];
    train_eval_prf(e, prec, rec, f1);
    fprintf(f, "accuracy %.4f  loss %.4f  (%zu samples)\n\n", e->accuracy, e->loss, e->n);
    int w = 6;
    for (int c = 0; c < k; c++) {
        int l = (int)strlen(s->class_names[c]);
        if (l > w)
            w = l;
    }
    fprintf(f, "confusion matrix (rows: true class, columns: predicted)\n%*s", w + 2, "");
    for (int c = 0; c < k; c++)
        fprintf(f, " %5d", c);
    fputc('\n', f);
    for (int r = 0; r < k; r++) {
        fprintf(f, "%d %-*s", r, w, s->class_names[r]);
        for (int c = 0; c < k; c++)
            fprintf(f, " %5ld", e->confusion[r * k + c]);
        fputc('\n', f);
    }
    fprintf(f, "\n%-*s %9s %9s %9s %8s\n", w + 2, "class", "precision", "recall", "f1", "support");
    double mp = 0, mr = 0, mf = 0;
    for (int c = 0; c < k; c++) {
        long sup = 0;
        for (int j = 0; j < k; j++)
            sup += e->confusion[c * k + j];
        fprintf(f, "%d %-*s %9.4f %9.4f %9.4f %8ld\n", c, w, s->class_names[c], prec[c], rec[c], f1[c], sup);
        mp += prec[c];
        mr += rec[c];
        mf += f1[c];
    }
    fprintf(f, "%-*s %9.4f %9.4f %9.4f %8zu\n", w + 2, "macro avg", mp / k, mr / k, mf / k, e->n);
}

void cli_json_eval(FILE *f, const train_eval *e)
{
    fprintf(f, "{\"accuracy\": %.6f, \"loss\": %.6f, \"samples\": %zu, \"confusion\": [", e->accuracy,
            e->loss, e->n);
    for (int r = 0; r < e->k; r++) {
        fprintf(f, "%s[", r ? ", " : "");
        for (int c = 0; c < e->k; c++)
            fprintf(f, "%s%ld", c ? ", " : "", e->confusion[r * e->k + c]);
        fputc(']', f);
    }
    fputs("]}", f);
}
