/* ledger.c — the device-side privacy budget file (see ledger.h for the format and the API).
 *
 * Layer `fed`: core (err, fileio), fed/accountant (RDP curves, RDP → ε), libsodium (BLAKE2b
 * for the checksum and for noticing that another process rewrote the file). Parsing is
 * strict: anything unexpected is AF_EFORMAT with the line number, never a reset. Numbers go
 * through the C locale (uselocale) so an app that called setlocale(LC_ALL, "") with a
 * decimal comma still reads and writes the same file. Never prints.
 */
#include "fed/ledger.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/strbuf.h"
#include "core/fileio.h"
#include "fed/accountant.h"

#define LEDGER_MAGIC "artificien-privacy-ledger v1"
#define SUM_BYTES 16

typedef struct lentry {
    char id[LEDGER_MAX_ID + 1];
    double delta;
    int64_t updated, steps;
    double rdp[ACCT_MAX_ORDERS];
} lentry;

struct ledger {
    char *path;
    size_t n_orders;
    double orders[ACCT_MAX_ORDERS];
    lentry *e;
    size_t n, cap;
    int on_disk;              /* the file existed when last read or written */
    uint8_t seen[SUM_BYTES];  /* BLAKE2b of the whole file as last read or written */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int id_ok(const char *s)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (n >= LEDGER_MAX_ID ||
            !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return n > 0;
}

static int check_id(const char *project)
{
    if (!id_ok(project))
        return af_seterr(AF_EINVAL, "ledger: project id '%.*s' must be 1..%d characters of [A-Za-z0-9._:-]",
                         LEDGER_MAX_ID, project ? project : "(null)", LEDGER_MAX_ID);
    return 0;
}

static void digest(const void *buf, size_t len, uint8_t out[SUM_BYTES])
{
    crypto_generichash(out, SUM_BYTES, (const unsigned char *)buf, (unsigned long long)len, NULL, 0);
}

static lentry *find(const ledger *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->e[i].id, id) == 0)
            return &l->e[i];
    return NULL;
}

static double eps_of(const ledger *l, const double *rdp, double delta)
{
    double e;
    if (acct_get_epsilon(l->orders, rdp, l->n_orders, delta, &e, NULL))
        return INFINITY; /* cannot happen for checked inputs; never understate */
    return e;
}

/* The C locale for numbers on this thread, restored by c_locale_end. */
typedef struct cloc {
    locale_t c, old;
} cloc;

static int c_locale_begin(cloc *s)
{
    s->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (s->c == (locale_t)0)
        return af_seterr(AF_ENOMEM, "ledger: cannot create the C locale");
    s->old = uselocale(s->c);
    return 0;
}

static void c_locale_end(cloc *s)
{
    uselocale(s->old);
    freelocale(s->c);
}

/* ---- parsing ------------------------------------------------------------------------------ */

/* A whole token as a double; tiny values that underflow to subnormals are fine (RDP at a
 * minute q), NaN is not. */
static int parse_f64(const char *tok, double *v)
{
    char *end;
    if (!tok || !*tok)
        return -1;
    *v = strtod(tok, &end);
    return (*end || isnan(*v)) ? -1 : 0;
}

static int parse_i64(const char *tok, int64_t *v)
{
    char *end;
    if (!tok || !*tok || !(tok[0] == '-' || (tok[0] >= '0' && tok[0] <= '9')))
        return -1;
    errno = 0;
    long long x = strtoll(tok, &end, 10);
    if (*end || errno == ERANGE)
        return -1;
    *v = x;
    return 0;
}

/* Splits line (modified) on single spaces into tok[0..*n), at most max. -1 if more, or on an
 * empty token (two spaces, leading/trailing space). */
static int split(char *line, char **tok, size_t max, size_t *n)
{
    *n = 0;
    char *p = line;
    for (;;) {
        char *sp = strchr(p, ' ');
        if (sp)
            *sp = '\0';
        if (!*p || *n == max)
            return -1;
        tok[(*n)++] = p;
        if (!sp)
            return 0;
        p = sp + 1;
    }
}

#define MAX_TOKENS (11 + ACCT_MAX_ORDERS)

static int bad(const char *path, size_t line, const char *what)
{
    return af_seterr(AF_EFORMAT, "ledger %s: line %zu: %s (the file is corrupt; it was not changed — "
                                 "restore it from a backup or remove it deliberately)",
                     path, line, what);
}

static int grow(ledger *l)
{
    if (l->n < l->cap)
        return 0;
    size_t cap = l->cap ? 2 * l->cap : 4;
    lentry *e = realloc(l->e, cap * sizeof *e);
    if (!e)
        return af_seterr(AF_ENOMEM, "ledger: out of memory");
    l->e = e;
    l->cap = cap;
    return 0;
}

/* Parses the whole file text (len bytes, NUL-terminated, modified in place) into l. */
static int parse(ledger *l, char *text, size_t len)
{
    const char *path = l->path;
    char *tok[MAX_TOKENS];
    size_t nt, lineno = 0;
    if (len == 0)
        return bad(path, 1, "the file is empty: expected '" LEDGER_MAGIC "'");
    if (strlen(text) != len)
        return bad(path, 1, "the file contains a NUL byte");
    if (text[len - 1] != '\n')
        return bad(path, 1, "the file does not end with a newline: it was cut short");
    /* the checksum covers every byte before the last line (which must be the end line);
     * computed first because the parsing below cuts the text up in place */
    size_t last = len - 1;
    while (last > 0 && text[last - 1] != '\n')
        last--;
    uint8_t sum[SUM_BYTES];
    digest(text, last, sum);
    char *p = text, *end_line = NULL;
    int have_orders = 0;
    while (p < text + len) {
        char *nl = strchr(p, '\n');
        *nl = '\0';
        char *line = p;
        p = nl + 1;
        lineno++;
        if (end_line)
            return bad(path, lineno, "text after the 'end' line");
        if (lineno == 1) {
            if (strcmp(line, LEDGER_MAGIC) != 0)
                return bad(path, lineno, "expected the header '" LEDGER_MAGIC "'");
            continue;
        }
        if (strncmp(line, "end ", 4) == 0) {
            end_line = line;
            break;
        }
        if (split(line, tok, MAX_TOKENS, &nt))
            return bad(path, lineno, "malformed line (fields are separated by single spaces)");
        if (lineno == 2) {
            int64_t k;
            if (strcmp(tok[0], "orders") != 0 || nt < 2 || parse_i64(tok[1], &k) || k < 1 ||
                k > ACCT_MAX_ORDERS || (size_t)k != nt - 2)
                return bad(path, lineno, "expected 'orders N o_1 ... o_N' with 1 <= N <= 256");
            double o[ACCT_MAX_ORDERS];
            for (size_t i = 0; i < (size_t)k; i++)
                if (parse_f64(tok[2 + i], &o[i]))
                    return bad(path, lineno, "an order is not a number");
            acct a;
            if (acct_init(&a, o, (size_t)k))
                return bad(path, lineno, "the order list is not valid (orders must be > 1 and finite)");
            l->n_orders = (size_t)k;
            memcpy(l->orders, o, sizeof(double) * (size_t)k);
            have_orders = 1;
            continue;
        }
        const size_t N = l->n_orders;
        if (!have_orders || strcmp(tok[0], "project") != 0)
            return bad(path, lineno, "expected 'project ID epsilon E delta D updated T steps S rdp ...'");
        if (nt != 11 + N || strcmp(tok[2], "epsilon") || strcmp(tok[4], "delta") || strcmp(tok[6], "updated") ||
            strcmp(tok[8], "steps") || strcmp(tok[10], "rdp")) {
            char msg[200];
            snprintf(msg, sizeof msg, "expected 'project ID epsilon E delta D updated T steps S rdp' and %zu RDP values",
                     N);
            return bad(path, lineno, msg);
        }
        if (!id_ok(tok[1]))
            return bad(path, lineno, "the project id must be 1..128 characters of [A-Za-z0-9._:-]");
        if (find(l, tok[1]))
            return bad(path, lineno, "a project appears twice");
        if (grow(l))
            return AF_ENOMEM;
        lentry *e = &l->e[l->n];
        memset(e, 0, sizeof *e);
        strcpy(e->id, tok[1]);
        double eps;
        if (parse_f64(tok[3], &eps) || !(eps >= 0))
            return bad(path, lineno, "epsilon must be a number >= 0 or inf");
        if (parse_f64(tok[5], &e->delta) || !(e->delta > 0 && e->delta < 1))
            return bad(path, lineno, "delta must be a number in (0, 1)");
        if (parse_i64(tok[7], &e->updated) || e->updated < 0)
            return bad(path, lineno, "updated must be unix seconds >= 0");
        if (parse_i64(tok[9], &e->steps) || e->steps < 0)
            return bad(path, lineno, "steps must be an integer >= 0");
        for (size_t i = 0; i < N; i++)
            if (parse_f64(tok[11 + i], &e->rdp[i]) || !(e->rdp[i] >= 0))
                return bad(path, lineno, "an RDP value is not a number >= 0 (or inf)");
        /* the stored ε is redundant with the curve: a disagreement means tampering or damage */
        double want = eps_of(l, e->rdp, e->delta);
        if (!(isinf(want) ? isinf(eps) : fabs(eps - want) <= 1e-9 * fmax(1.0, want)))
            return bad(path, lineno, "epsilon does not match the project's RDP curve");
        l->n++;
    }
    if (!end_line)
        return bad(path, lineno + 1, "missing the 'end K CHECKSUM' line: the file was cut short");
    if (!have_orders)
        return bad(path, lineno, "missing the 'orders' line");
    int64_t k;
    if (split(end_line, tok, 3, &nt) || nt != 3 || parse_i64(tok[1], &k) || strlen(tok[2]) != 2 * SUM_BYTES)
        return bad(path, lineno, "expected 'end K CHECKSUM' (K projects, 32 hex digits)");
    if (k != (int64_t)l->n)
        return bad(path, lineno, "the project count on the 'end' line does not match the lines above");
    char hex[2 * SUM_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, sum, SUM_BYTES);
    if (strcmp(hex, tok[2]) != 0)
        return bad(path, lineno, "checksum mismatch: the file was altered or damaged");
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Appends " v" with the fewest significant digits (15..17) that read back as exactly v. */
static void sb_double(af_strbuf *b, double v)
{
    char tmp[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(tmp, sizeof tmp, "%.*g", digits, v);
        if (digits == 17 || strtod(tmp, NULL) == v)
            break;
    }
    af_strbuf_printf(b, " %s", tmp);
}

/* Serialises l and writes it atomically; on success updates the remembered digest. */
static int write_out(ledger *l)
{
    af_strbuf b = {0};
    cloc cl = {0};
    int rc = c_locale_begin(&cl);
    if (rc)
        return rc;
    af_strbuf_printf(&b, "%s\norders %zu", LEDGER_MAGIC, l->n_orders);
    for (size_t i = 0; i < l->n_orders; i++)
        sb_double(&b, l->orders[i]);
    af_strbuf_printf(&b, "\n");
    for (size_t j = 0; j < l->n; j++) {
        const lentry *e = &l->e[j];
        af_strbuf_printf(&b, "project %s epsilon", e->id);
        sb_double(&b, eps_of(l, e->rdp, e->delta));
        af_strbuf_printf(&b, " delta");
        sb_double(&b, e->delta);
        af_strbuf_printf(&b, " updated %" PRId64 " steps %" PRId64 " rdp", e->updated, e->steps);
        for (size_t i = 0; i < l->n_orders; i++)
            sb_double(&b, e->rdp[i]);
        af_strbuf_printf(&b, "\n");
    }
    c_locale_end(&cl);
    if (b.oom) {
        free(b.buf);
        return af_seterr(AF_ENOMEM, "ledger: out of memory");
    }
    uint8_t sum[SUM_BYTES];
    char hex[2 * SUM_BYTES + 1];
    digest(b.buf, b.len, sum);
    sodium_bin2hex(hex, sizeof hex, sum, SUM_BYTES);
    af_strbuf_printf(&b, "end %zu %s\n", l->n, hex);
    if (b.oom) {
        free(b.buf);
        return af_seterr(AF_ENOMEM, "ledger: out of memory");
    }
    const void *bufs[1] = {b.buf};
    rc = af_write_file_atomic(l->path, bufs, &b.len, 1);
    if (!rc) {
        digest(b.buf, b.len, l->seen);
        l->on_disk = 1;
    } else {
        af_preerr(rc, "ledger %s", l->path);
    }
    free(b.buf);
    return rc;
}

/* ---- API ---------------------------------------------------------------------------------- */

int ledger_open(const char *path, ledger **out)
{
    if (!path || !*path)
        return af_seterr(AF_EINVAL, "ledger: path must be a non-empty file name");
    if (!out)
        return af_seterr(AF_EINVAL, "ledger: out must not be NULL");
    if (sodium_init() < 0)
        return af_seterr(AF_ESTATE, "ledger: libsodium cannot start");
    ledger *l = calloc(1, sizeof *l);
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (!l || !(l->path = strdup(path))) {
        rc = af_seterr(AF_ENOMEM, "ledger: out of memory");
        goto fail;
    }
    rc = af_read_file(path, &text, &len);
    if (rc == AF_ENOTFOUND) { /* a new ledger: the default orders, written on the first record */
        l->n_orders = ACCT_N_DEFAULT_ORDERS;
        memcpy(l->orders, acct_default_orders, sizeof acct_default_orders);
        *out = l;
        return 0;
    }
    if (rc) {
        af_preerr(rc, "ledger");
        goto fail;
    }
    digest(text, len, l->seen);
    l->on_disk = 1;
    cloc cl = {0};
    if ((rc = c_locale_begin(&cl)))
        goto fail;
    rc = parse(l, text, len);
    c_locale_end(&cl);
    if (rc)
        goto fail;
    free(text);
    *out = l;
    return 0;
fail:
    free(text);
    ledger_free(l);
    return rc;
}

void ledger_free(ledger *l)
{
    if (!l)
        return;
    free(l->path);
    free(l->e);
    free(l);
}

size_t ledger_count(const ledger *l) { return l ? l->n : 0; }

static void to_entry(const ledger *l, const lentry *e, ledger_entry *out)
{
    memset(out, 0, sizeof *out);
    strcpy(out->project, e->id);
    out->epsilon = eps_of(l, e->rdp, e->delta);
    out->delta = e->delta;
    out->updated = e->updated;
    out->steps = e->steps;
}

int ledger_get(const ledger *l, size_t i, ledger_entry *out)
{
    if (!l || !out || i >= l->n)
        return af_seterr(AF_ERANGE, "ledger: entry %zu out of range (%zu projects)", i, l ? l->n : 0);
    to_entry(l, &l->e[i], out);
    return 0;
}

int ledger_find(const ledger *l, const char *project, ledger_entry *out)
{
    int rc = check_id(project);
    if (rc)
        return rc;
    const lentry *e = l ? find(l, project) : NULL;
    if (!e)
        return af_seterr(AF_ENOTFOUND, "ledger: project '%s' has no record (nothing spent)", project);
    if (out)
        to_entry(l, e, out);
    return 0;
}

static int check_task(const char *project, double q, double z, int64_t steps, double delta)
{
    int rc = check_id(project);
    if (rc)
        return rc;
    if (!(q >= 0 && q <= 1))
        return af_seterr(AF_ERANGE, "ledger: q = %g: expected a sampling rate in [0, 1]", q);
    if (!(z >= 0 && isfinite(z)))
        return af_seterr(AF_ERANGE, "ledger: noise multiplier z = %g: expected a finite value >= 0", z);
    if (steps < 0)
        return af_seterr(AF_ERANGE, "ledger: steps = %" PRId64 ": expected >= 0", steps);
    if (!(delta > 0 && delta < 1))
        return af_seterr(AF_ERANGE, "ledger: delta = %g: expected a value in (0, 1)", delta);
    return 0;
}

/* rdp_out = project's curve (0 if new) + the task's; *delta_out = the δ ε is reported at. */
static int compose(const ledger *l, const lentry *e, double q, double z, int64_t steps, double delta,
                   double *rdp_out, double *delta_out)
{
    int rc = acct_compute_rdp(q, z, steps, l->orders, l->n_orders, rdp_out);
    if (rc)
        return af_preerr(rc, "ledger");
    for (size_t i = 0; i < l->n_orders; i++) {
        /* RDP is ≥ 0; the accountant can return −1e−173 for a minute q (rounding): count 0,
         * which only ever overstates what was spent */
        if (rdp_out[i] < 0)
            rdp_out[i] = 0;
        if (e)
            rdp_out[i] += e->rdp[i]; /* RDP composes by addition, order by order */
    }
    *delta_out = e && e->delta < delta ? e->delta : delta;
    return 0;
}

int ledger_check(const ledger *l, const char *project, double q, double z, int64_t steps,
                 double delta, double eps_limit, double *eps_after, int *allowed)
{
    int rc;
    if (!l || !allowed)
        return af_seterr(AF_EINVAL, "ledger_check: ledger and allowed must not be NULL");
    if ((rc = check_task(project, q, z, steps, delta)))
        return rc;
    if (!(eps_limit > 0))
        return af_seterr(AF_ERANGE, "ledger: epsilon limit %g: expected a value > 0", eps_limit);
    double rdp[ACCT_MAX_ORDERS], d = delta;
    if ((rc = compose(l, find(l, project), q, z, steps, delta, rdp, &d)))
        return rc;
    double e = eps_of(l, rdp, d);
    if (eps_after)
        *eps_after = e;
    *allowed = e <= eps_limit;
    return 0;
}

/* Did someone else write the file since we read or wrote it? */
static int unchanged_on_disk(const ledger *l)
{
    char *text = NULL;
    size_t len = 0;
    int rc = af_read_file(l->path, &text, &len);
    if (rc == AF_ENOTFOUND) {
        if (l->on_disk)
            return af_seterr(AF_ESTATE, "ledger %s: the file was removed since it was opened; reopen it", l->path);
        af_clearerr();
        return 0;
    }
    if (rc)
        return af_preerr(rc, "ledger");
    uint8_t sum[SUM_BYTES];
    digest(text, len, sum);
    free(text);
    if (!l->on_disk || sodium_memcmp(sum, l->seen, SUM_BYTES) != 0)
        return af_seterr(AF_ESTATE, "ledger %s: the file changed since it was opened (another process?); "
                                    "reopen it and check again", l->path);
    return 0;
}

int ledger_record(ledger *l, const char *project, double q, double z, int64_t steps,
                  double delta, int64_t now)
{
    int rc;
    if (!l)
        return af_seterr(AF_EINVAL, "ledger_record: ledger must not be NULL");
    if ((rc = check_task(project, q, z, steps, delta)))
        return rc;
    if (now < 0)
        return af_seterr(AF_ERANGE, "ledger: now = %" PRId64 ": expected unix seconds (0 = the current time)", now);
    lentry *e = find(l, project);
    if (e && steps > INT64_MAX - e->steps)
        return af_seterr(AF_ERANGE, "ledger: project '%s': step count overflows", project);
    double rdp[ACCT_MAX_ORDERS], d = delta;
    if ((rc = compose(l, e, q, z, steps, delta, rdp, &d)))
        return rc;
    if ((rc = unchanged_on_disk(l)))
        return rc;
    /* change in memory, write, and undo the change if the write fails */
    lentry saved = {0};
    int added = 0;
    if (!e) {
        if ((rc = grow(l)))
            return rc;
        e = &l->e[l->n++];
        memset(e, 0, sizeof *e);
        strcpy(e->id, project);
        added = 1;
    } else {
        saved = *e;
    }
    memcpy(e->rdp, rdp, sizeof(double) * l->n_orders);
    e->delta = d;
    e->updated = now ? now : (int64_t)time(NULL);
    e->steps += steps;
    if ((rc = write_out(l))) {
        if (added)
            l->n--;
        else
            *e = saved;
    }
    return rc;
}

int ledger_total(const ledger *l, double delta, double *eps)
{
    if (!l || !eps)
        return af_seterr(AF_EINVAL, "ledger_total: ledger and eps must not be NULL");
    if (!(delta > 0 && delta < 1))
        return af_seterr(AF_ERANGE, "ledger: delta = %g: expected a value in (0, 1)", delta);
    double rdp[ACCT_MAX_ORDERS] = {0};
    for (size_t j = 0; j < l->n; j++)
        for (size_t i = 0; i < l->n_orders; i++)
            rdp[i] += l->e[j].rdp[i];
    *eps = eps_of(l, rdp, delta);
    return 0;
}
