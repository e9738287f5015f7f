/* report.h — self-contained HTML reports of runs (`artificien train`, `artificien sim`): line
 * and bar charts and heat maps drawn as inline SVG, tables, the confusion matrix. No
 * JavaScript, no network, every string escaped. Layer `cli`. Never prints.
 *
 *   report *r;
 *   if (report_open("Artificien simulation", &r)) return -1;
 *   report_table_kv(r, keys, vals, n);
 *   report_line_chart(r, &chart);
 *   rc = report_close(r, "RUN/report.html"); // writes atomically and frees r
 */
#ifndef AF_CLI_REPORT_H
#define AF_CLI_REPORT_H

#include "data/dataset.h"
#include "train/train.h"

#define REPORT_MAX_SERIES 4

/* One line chart: up to REPORT_MAX_SERIES named series over the same x values (NAN = no
 * point; a polyline joins the finite points in order). legend_right puts the legend beside
 * the plot instead of over its top right corner; x_whole labels the x axis at whole numbers
 * only (rounds). Both 0 give the training report's layout. */
typedef struct report_chart {
    const char *title, *x_label, *y_label;
    int n;
    const double *x;
    int n_series;
    const char *names[REPORT_MAX_SERIES];
    const double *y[REPORT_MAX_SERIES];
    int legend_right, x_whole;
} report_chart;

/* A bar chart: n categories (names[i] under each group), up to REPORT_MAX_SERIES series drawn
 * side by side per category; y from 0 to the largest finite value (NAN = no bar). */
typedef struct report_bars {
    const char *title, *x_label, *y_label;
    int n;
    const char *const *names;
    int n_series;
    const char *series[REPORT_MAX_SERIES]; /* legend; NULL when n_series == 1 hides it */
    const double *y[REPORT_MAX_SERIES];
} report_bars;

/* A heat map of rows × cols values v[r * cols + c] >= 0, shaded from white (0) to the
 * colour at vmax (<= 0: the largest value). row_names, col_names label the rows and columns;
 * row_notes (may be NULL) are written right of each row; each cell's tooltip shows its value. */
typedef struct report_heatmap {
    const char *title;
    int rows, cols;
    const char *const *row_names, *const *col_names, *const *row_notes;
    const double *v;
    double vmax;
} report_heatmap;

typedef struct report report;

/* Starts a document: the HTML head and a heading with title. *out is the caller's, for the
 * calls below and one report_close. Returns 0 or AF_ENOMEM. */
int report_open(const char *title, report **out);

/* Sections, appended in call order. NULL strings write nothing. Out-of-memory is remembered
 * and reported by report_close. */
void report_heading(report *r, const char *text);  /* an <h2> */
void report_text(report *r, const char *text);     /* a paragraph */
void report_table_kv(report *r, const char *const *keys, const char *const *vals, int n);
void report_line_chart(report *r, const report_chart *c);
void report_bar_chart(report *r, const report_bars *b);
void report_heatmap_svg(report *r, const report_heatmap *h);
/* The confusion matrix of ev as a heat-map table, with schema's class names (may be NULL);
 * nothing when ev is NULL or has no classes. */
void report_confusion(report *r, const train_eval *ev, const data_schema *schema);

/* Ends the document and writes it to path atomically (path NULL: discards it), then frees r
 * (NULL is fine). Returns 0, AF_ENOMEM or AF_EIO with a message naming path. */
int report_close(report *r, const char *path);

/* The training report in one call: a heading, a key/value table of the run's settings
 * (keys/vals, n_kv), the line charts, and the confusion matrix with class names (ev may be
 * NULL). Writes path atomically; 0 or AF_E*. */
int report_write_html(const char *path, const char *title, const char *const *keys,
                      const char *const *vals, int n_kv, const report_chart *charts,
                      int n_charts, const train_eval *ev, const data_schema *schema);

#endif
