/* report.c — HTML + inline SVG run reports (see report.h). Everything is escaped; the file
 * opens in any browser without network access. */
#include "cli/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/fileio.h"

static const char *colors[REPORT_MAX_SERIES] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void chart_svg(FILE *f, const report_chart *c)
{
    const double W = 560, H = 300, L = 60, R = 20, T = 30, B = 45;
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
    if (xmax - xmin < 1e-9)
        xmax = xmin + 1;
    double pad = 0.05 * (ymax - ymin);
    ymin -= pad;
    ymax += pad;
#define PX(v) (L + ((v) - xmin) / (xmax - xmin) * (W - L - R))
#define PY(v) (T + (ymax - (v)) / (ymax - ymin) * (H - T - B))
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
               "font-family='sans-serif' font-size='11'>\n", W, H, W, H);
    fprintf(f, "<text x='%.0f' y='18' font-size='14' font-weight='bold'>", L);
    esc(f, c->title);
    fprintf(f, "</text>\n<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='#999'/>\n",
            L, T, W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double yv = ymin + (ymax - ymin) * k / 4, yp = PY(yv);
        fprintf(f, "<line x1='%.0f' x2='%.0f' y1='%.1f' y2='%.1f' stroke='#eee'/>"
                   "<text x='%.0f' y='%.1f' text-anchor='end'>%.3g</text>\n",
                L, W - R, yp, yp, L - 4, yp + 4, yv);
        double xv = xmin + (xmax - xmin) * k / 4;
        fprintf(f, "<text x='%.1f' y='%.0f' text-anchor='middle'>%.3g</text>\n", PX(xv), H - B + 15, xv);
    }
    fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='middle'>", (L + W - R) / 2, H - 8);
    esc(f, c->x_label);
    fprintf(f, "</text>\n<text x='14' y='%.0f' text-anchor='middle' transform='rotate(-90 14 %.0f)'>",
            (T + H - B) / 2, (T + H - B) / 2);
    esc(f, c->y_label);
    fputs("</text>\n", f);
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
        fprintf(f, "<rect x='%.0f' y='%.0f' width='10' height='10' fill='%s'/><text x='%.0f' y='%.0f'>",
                W - R - 150, T + 8 + 15.0 * s, colors[s], W - R - 135, T + 17 + 15.0 * s);
        esc(f, c->names[s]);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
}

int report_write_html(const char *path, const char *title, const char *const *keys,
                      const char *const *vals, int n_kv, const report_chart *charts,
                      int n_charts, const train_eval *ev, const data_schema *schema)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return af_seterr(AF_ENOMEM, "report %s: out of memory", path);
    fputs("<!doctype html>\n<html><head><meta charset='utf-8'><title>", f);
    esc(f, title);
    fputs("</title><style>body{font-family:sans-serif;margin:2em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 8px;border:1px solid #ddd;"
          "text-align:right}th{background:#f4f4f4}.k{text-align:left}</style></head><body>\n<h1>", f);
    esc(f, title);
    fputs("</h1>\n<table>\n", f);
    for (int i = 0; i < n_kv; i++) {
        fputs("<tr><th class='k'>", f);
        esc(f, keys[i]);
        fputs("</th><td class='k'>", f);
        esc(f, vals[i]);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    for (int c = 0; c < n_charts; c++)
        chart_svg(f, &charts[c]);
    if (ev && ev->k > 0) {
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
    fputs("</body></html>\n", f);
    fclose(f);
    const void *b[1] = {buf};
    int rc = af_write_file_atomic(path, b, &len, 1);
    free(buf);
    return rc;
}
