/* report.c — HTML + inline SVG run reports (see report.h). The document is built in memory
 * (open_memstream) and written atomically at the end; every caller string is escaped, and
 * the file opens in any browser without network access (no scripts, no external links). */
#include "cli/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"

static const char *colors[REPORT_MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};

struct report {
    FILE *f;
    char *buf;
    size_t len;
};

/* Text for element content and for attributes in either quote style. */
static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void svg_open(FILE *f, double W, double H, double L, const char *title)
{
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
               "font-family='sans-serif' font-size='11'>\n", W, H, W, H);
    fprintf(f, "<text x='%.0f' y='18' font-size='14' font-weight='bold'>", L);
    esc(f, title);
    fputs("</text>\n", f);
}

/* The x label centred under the plot and the y label rotated along its left edge. */
static void axis_labels(FILE *f, double W, double H, double L, double R, double T, double B,
                        const char *x_label, const char *y_label)
{
    fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='middle'>", (L + W - R) / 2, H - 8);
    esc(f, x_label);
    fprintf(f, "</text>\n<text x='14' y='%.0f' text-anchor='middle' transform='rotate(-90 14 %.0f)'>",
            (T + H - B) / 2, (T + H - B) / 2);
    esc(f, y_label);
    fputs("</text>\n", f);
}

static void legend(FILE *f, double x, double T, int s, const char *name)
{
    fprintf(f, "<rect x='%.0f' y='%.0f' width='10' height='10' fill='%s'/><text x='%.0f' y='%.0f'>",
            x, T + 8 + 15.0 * s, colors[s], x + 15, T + 17 + 15.0 * s);
    esc(f, name);
    fputs("</text>\n", f);
}

static void chart_svg(FILE *f, const report_chart *c)
{
    const double W = c->legend_right ? 730 : 560, H = 300, L = 60, R = c->legend_right ? 190 : 20, T = 30, B = 45;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < c->n; i++) {
        if (c->x[i] < xmin) xmin = c->x[i];
        if (c->x[i] > xmax) xmax = c->x[i];
        for (int s = 0; s < c->n_series; s++) {
            double v = c->y[s][i];
            if (!isfinite(v))
                continue;
            if (v < ymin) ymin = v;
            if (v > ymax) ymax = v;
        }
    }
    if (!isfinite(ymin)) {
        ymin = 0;
        ymax = 1;
    }
    if (ymax - ymin < 1e-9) {
        ymax += 0.5;
        ymin -= 0.5;
    }
    if (!isfinite(xmin)) { /* no points at all */
        xmin = 0;
        xmax = 1;
    }
    if (xmax - xmin < 1e-9)
        xmax = xmin + 1;
    double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
#define PX(v) (L + ((v) - xmin) / (xmax - xmin) * (W - L - R))
#define PY(v) (T + (ymax - (v)) / (ymax - ymin) * (H - T - B))
    svg_open(f, W, H, L, c->title);
    fprintf(f, "<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='#999'/>\n",
            L, T, W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double yv = ymin + (ymax - ymin) * k / 4, yp = PY(yv);
        fprintf(f, "<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#eee'/>"
                   "<text x='%.0f' y='%.1f' text-anchor='end'>%.3g</text>\n",
                L, W - R, yp, yp, L - 4, yp + 4, yv);
        if (c->x_whole)
            continue;
        double xv = xmin + (xmax - xmin) * k / 4;
        fprintf(f, "<text x='%.1f' y='%.0f' text-anchor='middle'>%.3g</text>\n", PX(xv), H - B + 15, xv);
    }
    if (c->x_whole) { /* about five labels at whole numbers from ceil(xmin) */
        double step = fmax(1, ceil((xmax - xmin) / 5));
        for (double xv = ceil(xmin); xv <= xmax + 1e-9; xv += step)
            fprintf(f, "<text x='%.1f' y='%.0f' text-anchor='middle'>%.0f</text>\n", PX(xv), H - B + 15, xv);
    }
    axis_labels(f, W, H, L, R, T, B, c->x_label, c->y_label);
    for (int s = 0; s < c->n_series; s++) {
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", colors[s]);
        for (int i = 0; i < c->n; i++)
            if (isfinite(c->y[s][i]))
                fprintf(f, "%.1f,%.1f ", PX(c->x[i]), PY(c->y[s][i]));
        fputs("'/>\n", f);
        for (int i = 0; i < c->n; i++)
            if (isfinite(c->y[s][i]))
                fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s'><title>%g: %.4f</title></circle>\n",
                        PX(c->x[i]), PY(c->y[s][i]), colors[s], c->x[i], c->y[s][i]);
        legend(f, c->legend_right ? W - R + 10 : W - R - 150, T, s, c->names[s]);
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
}

static void bars_svg(FILE *f, const report_bars *b)
{
    const int ns = b->n_series < 1 ? 1 : b->n_series;
    const double bar = ns == 1 ? 26 : 14, gap = 10, group = ns * bar + gap;
    const double L = 60, R = ns > 1 ? 150 : 20, T = 30, B = 95, H = 320;
    const double W = fmax(560, L + R + b->n * group);
    double ymax = 0;
    for (int s = 0; s < b->n_series; s++)
        for (int i = 0; i < b->n; i++)
            if (isfinite(b->y[s][i]) && b->y[s][i] > ymax)
                ymax = b->y[s][i];
    if (ymax <= 0)
        ymax = 1;
    ymax *= 1.05;
#define PY(v) (T + (ymax - (v)) / ymax * (H - T - B))
    svg_open(f, W, H, L, b->title);
    fprintf(f, "<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='#999'/>\n",
            L, T, W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double yv = ymax * k / 4, yp = PY(yv);
        fprintf(f, "<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#eee'/>"
                   "<text x='%.0f' y='%.1f' text-anchor='end'>%.3g</text>\n",
                L, W - R, yp, yp, L - 4, yp + 4, yv);
    }
    for (int i = 0; i < b->n; i++) {
        double x0 = L + gap / 2 + i * group;
        for (int s = 0; s < b->n_series; s++) {
            double v = b->y[s][i];
            if (!isfinite(v))
                continue;
            double top = PY(v < 0 ? 0 : v);
            fprintf(f, "<rect x='%.1f' y='%.1f' width='%.0f' height='%.1f' fill='%s'><title>",
                    x0 + s * bar, top, bar - 1, H - B - top, colors[s]);
            esc(f, b->names[i]);
            if (b->n_series > 1 && b->series[s]) {
                fputs(", ", f);
                esc(f, b->series[s]);
            }
            fprintf(f, ": %g</title></rect>\n", v);
        }
        /* category names slanted so that long ones do not collide */
        double xc = x0 + ns * bar / 2, yc = H - B + 12;
        fprintf(f, "<text x='%.1f' y='%.0f' text-anchor='end' transform='rotate(-40 %.1f %.0f)'>", xc, yc, xc, yc);
        esc(f, b->names[i]);
        fputs("</text>\n", f);
    }
    axis_labels(f, W, H, L, R, T, B, b->x_label, b->y_label);
    if (b->n_series > 1)
        for (int s = 0; s < b->n_series; s++)
            legend(f, W - R + 10, T, s, b->series[s]);
    fputs("</svg>\n", f);
#undef PY
}

static void heatmap_svg(FILE *f, const report_heatmap *h)
{
    const double cw = 34, ch = h->rows <= 60 ? 12 : fmax(3, 720.0 / h->rows);
    const double L = 110, T = 110, R = h->row_notes ? 200 : 20, B = 40;
    const double W = L + h->cols * cw + R, H = T + h->rows * ch + B;
    double vmax = h->vmax;
    if (vmax <= 0)
        for (int i = 0; i < h->rows * h->cols; i++)
            if (isfinite(h->v[i]) && h->v[i] > vmax)
                vmax = h->v[i];
    if (vmax <= 0)
        vmax = 1;
    svg_open(f, W, H, 10, h->title);
    for (int c = 0; c < h->cols; c++) { /* column names slanted above the columns */
        double x = L + (c + 0.5) * cw, y = T - 6;
        fprintf(f, "<text x='%.1f' y='%.0f' transform='rotate(-50 %.1f %.0f)'>", x, y, x, y);
        esc(f, h->col_names[c]);
        fputs("</text>\n", f);
    }
    const double fs = ch >= 10 ? 10 : 0; /* row text only where it fits */
    for (int r = 0; r < h->rows; r++) {
        double y = T + r * ch;
        if (fs > 0) {
            fprintf(f, "<text x='%.0f' y='%.1f' text-anchor='end' font-size='%.0f'>", L - 4, y + ch - 2, fs);
            esc(f, h->row_names[r]);
            fputs("</text>\n", f);
            if (h->row_notes) {
                fprintf(f, "<text x='%.0f' y='%.1f' font-size='%.0f'>", L + h->cols * cw + 6, y + ch - 2, fs);
                esc(f, h->row_notes[r]);
                fputs("</text>\n", f);
            }
        }
        for (int c = 0; c < h->cols; c++) {
            double v = h->v[r * h->cols + c], a = isfinite(v) ? fmin(1, fmax(0, v / vmax)) : 0;
            fprintf(f, "<rect x='%.0f' y='%.1f' width='%.0f' height='%.1f' fill='#1f77b4' fill-opacity='%.3f' "
                       "stroke='#fff' stroke-width='0.5'><title>",
                    L + c * cw, y, cw, ch, a);
            esc(f, h->row_names[r]);
            fputs(", ", f);
            esc(f, h->col_names[c]);
            fprintf(f, ": %.4g</title></rect>\n", v);
        }
    }
    fprintf(f, "<rect x='%.0f' y='%.0f' width='%.0f' height='%.1f' fill='none' stroke='#999'/>\n", L, T,
            h->cols * cw, h->rows * ch);
    /* the colour scale: five swatches from 0 to vmax */
    const double ys = T + h->rows * ch + 12;
    for (int k = 0; k <= 4; k++) {
        double x = L + k * 2 * cw;
        fprintf(f, "<rect x='%.0f' y='%.0f' width='12' height='12' fill='#1f77b4' fill-opacity='%.2f' "
                   "stroke='#999' stroke-width='0.5'/><text x='%.0f' y='%.0f'>%.3g</text>\n",
                x, ys, k / 4.0, x + 16, ys + 10, vmax * k / 4);
    }
    fputs("</svg>\n", f);
}

int report_open(const char *title, report **out)
{
    *out = NULL;
    report *r = calloc(1, sizeof *r);
    if (!r || !(r->f = open_memstream(&r->buf, &r->len))) {
        free(r);
        return af_seterr(AF_ENOMEM, "report: out of memory");
    }
    FILE *f = r->f;
    fputs("<!doctype html>\n<html><head><meta charset='utf-8'><title>", f);
    esc(f, title);
    fputs("</title><style>body{font-family:sans-serif;margin:2em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 8px;border:1px solid #ddd;"
          "text-align:right}th{background:#f4f4f4}.k{text-align:left}</style></head><body>\n<h1>", f);
    esc(f, title);
    fputs("</h1>\n", f);
    *out = r;
    return 0;
}

void report_heading(report *r, const char *text)
{
    if (!text)
        return;
    fputs("<h2>", r->f);
    esc(r->f, text);
    fputs("</h2>\n", r->f);
}

void report_text(report *r, const char *text)
{
    if (!text)
        return;
    fputs("<p>", r->f);
    esc(r->f, text);
    fputs("</p>\n", r->f);
}

void report_table_kv(report *r, const char *const *keys, const char *const *vals, int n)
{
    FILE *f = r->f;
    fputs("<table>\n", f);
    for (int i = 0; i < n; i++) {
        fputs("<tr><th class='k'>", f);
        esc(f, keys[i]);
        fputs("</th><td class='k'>", f);
        esc(f, vals[i]);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

void report_line_chart(report *r, const report_chart *c)
{
    chart_svg(r->f, c);
}

void report_bar_chart(report *r, const report_bars *b)
{
    bars_svg(r->f, b);
}

void report_heatmap_svg(report *r, const report_heatmap *h)
{
    heatmap_svg(r->f, h);
}

void report_confusion(report *r, const train_eval *ev, const data_schema *schema)
{
    FILE *f = r->f;
    if (!ev || ev->k <= 0)
        return;
    const int k = ev->k;
    long mx = 1;
    for (int i = 0; i < k * k; i++)
        if (ev->confusion[i] > mx)
            mx = ev->confusion[i];
    fprintf(f, "<h2>Confusion matrix</h2><p>accuracy %.4f, loss %.4f, %zu samples; rows are the "
               "true class, columns the prediction</p>\n<table><tr><th></th>", ev->accuracy, ev->loss, ev->n);
    for (int j = 0; j < k; j++) {
        fputs("<th>", f);
        esc(f, schema ? schema->class_names[j] : "");
        fputs("</th>", f);
    }
    fputs("</tr>\n", f);
    for (int i = 0; i < k; i++) {
        fputs("<tr><th class='k'>", f);
        esc(f, schema ? schema->class_names[i] : "");
        fputs("</th>", f);
        for (int j = 0; j < k; j++) {
            long v = ev->confusion[i * k + j];
            double a = (double)v / (double)mx;
            fprintf(f, "<td style='background:rgba(%s,%.2f)'>%ld</td>",
                    i == j ? "31,119,180" : "214,39,40", a < 0.04 && v ? 0.04 : a, v);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

int report_close(report *r, const char *path)
{
    if (!r)
        return 0;
    fputs("</body></html>\n", r->f);
    int bad = ferror(r->f);
    int rc = fclose(r->f) || bad ? af_seterr(AF_ENOMEM, "report %s: out of memory", path ? path : "")
                                 : 0;
    if (!rc && path) {
        const void *b[1] = {r->buf};
        rc = af_write_file_atomic(path, b, &r->len, 1);
    }
    free(r->buf);
    free(r);
    return rc;
}

int report_write_html(const char *path, const char *title, const char *const *keys,
                      const char *const *vals, int n_kv, const report_chart *charts,
                      int n_charts, const train_eval *ev, const data_schema *schema)
{
    report *r;
    if (report_open(title, &r))
        return af_seterr(AF_ENOMEM, "report %s: out of memory", path);
    report_table_kv(r, keys, vals, n_kv);
    for (int c = 0; c < n_charts; c++)
        report_line_chart(r, &charts[c]);
    report_confusion(r, ev, schema);
    return report_close(r, path);
}
