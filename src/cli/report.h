/* report.h — a self-contained HTML report of a run: line charts drawn as inline SVG (no
 * JavaScript, no network) and the confusion matrix as a heat map. Layer `cli`. */
#ifndef AF_CLI_REPORT_H
#define AF_CLI_REPORT_H

#include "data/dataset.h"
#include "train/train.h"

#define REPORT_MAX_SERIES 4

/* One chart: up to REPORT_MAX_SERIES named series over the same x values (NAN = no point). */
typedef struct report_chart {
    const char *title, *x_label, *y_label;
    int n;
    const double *x;
    int n_series;
    const char *names[REPORT_MAX_SERIES];
    const double *y[REPORT_MAX_SERIES];
} report_chart;

/* Writes path atomically: a heading, a key/value table of the run's settings (keys/vals,
 * n_kv), the charts, and the confusion matrix with class names (ev may be NULL). */
int report_write_html(const char *path, const char *title, const char *const *keys,
                      const char *const *vals, int n_kv, const report_chart *charts,
                      int n_charts, const train_eval *ev, const data_schema *schema);

#endif
