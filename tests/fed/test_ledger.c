/* test_ledger.c — tests of src/fed/ledger.c, the device-side privacy budget file.
 *
 * ε is checked against the accountant (fed/accountant.h) composing the same steps, to 1e-12:
 * the ledger composes RDP curves, so several tasks cost exactly what one accountant says.
 * Corrupt files (cut short, flipped digits, edited fields with a recomputed checksum, …) must
 * be refused with AF_EFORMAT naming the line and must stay byte for byte as they were; a
 * ledger whose file another process rewrote must refuse to overwrite it.
 */
#include "fed/ledger.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../test.h"
#include "core/err.h"
#include "core/fileio.h"
#include "fed/accountant.h"

static char *slurp(const char *path, size_t *len)
{
    char *t = NULL;
    if (af_read_file(path, &t, len))
        return NULL;
    return t;
}

static void spit(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
}

/* ε of an accountant that composed the given (q, z, steps) triples, at delta. */
static double acct_eps(const double *q, const double *z, const int64_t *steps, int n, double delta)
{
    acct a;
    acct_init(&a, NULL, 0);
    for (int i = 0; i < n; i++)
        acct_step(&a, q[i], z[i], steps[i]);
    double e = -1;
    acct_epsilon(&a, delta, &e, NULL);
    return e;
}

TEST(ledger_new_file_is_empty_and_not_created_until_a_record)
{
    char path[600];
    snprintf(path, sizeof path, "%s/privacy.ledger", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    CHECK_EQ_INT(ledger_count(l), 0);
    ledger_entry e;
    CHECK_EQ_INT(ledger_find(l, "p1", &e), AF_ENOTFOUND);
    double tot = -1, after = -1;
    CHECK_EQ_INT(ledger_total(l, 1e-5, &tot), 0);
    CHECK(tot == 0.0);
    int ok = -1;
    CHECK_EQ_INT(ledger_check(l, "p1", 1.0, 2.0, 1, 1e-5, 3.0, &after, &ok), 0);
    double q = 1.0, z = 2.0;
    int64_t s = 1;
    CHECK_NEAR(after, acct_eps(&q, &z, &s, 1, 1e-5), 1e-12);
    CHECK_EQ_INT(ok, 1);
    CHECK_EQ_INT(ledger_check(l, "p1", 1.0, 2.0, 1, 1e-5, after * 0.999, &after, &ok), 0);
    CHECK_EQ_INT(ok, 0);
    size_t len;
    CHECK(slurp(path, &len) == NULL); /* opening and checking write nothing */
    ledger_free(l);
}

TEST(ledger_records_compose_exactly_like_the_accountant_and_survive_reopening)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    /* three single rounds without amplification, then a whole run of 200 at q = 0.01 */
    double q[4] = {1, 1, 1, 0.01}, z[4] = {1.1, 1.1, 1.1, 1.0};
    int64_t s[4] = {1, 1, 1, 200};
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(ledger_record(l, "proj-42", q[i], z[i], s[i], 1e-5, 1700000000 + i), 0);
    ledger_entry e;
    CHECK_EQ_INT(ledger_find(l, "proj-42", &e), 0);
    const double want = acct_eps(q, z, s, 4, 1e-5);
    CHECK_NEAR(e.epsilon, want, 1e-12 * want);
    CHECK_EQ_INT(e.steps, 203);
    CHECK_EQ_INT(e.updated, 1700000003);
    CHECK(e.delta == 1e-5);
    /* composing RDP curves is tighter than adding the ε of each task */
    double sum = 0;
    for (int i = 0; i < 4; i++)
        sum += acct_eps(&q[i], &z[i], &s[i], 1, 1e-5);
    CHECK(e.epsilon < 0.9 * sum);
    ledger_free(l);

    CHECK_EQ_INT(ledger_open(path, &l), 0);
    CHECK_EQ_INT(ledger_count(l), 1);
    ledger_entry f;
    CHECK_EQ_INT(ledger_get(l, 0, &f), 0);
    CHECK(strcmp(f.project, "proj-42") == 0);
    CHECK(f.epsilon == e.epsilon && f.delta == e.delta && f.steps == 203 && f.updated == 1700000003);
    CHECK_EQ_INT(ledger_get(l, 1, &f), AF_ERANGE);
    /* the what-if sees the recorded curve: one more round costs what the accountant says */
    double q5[5] = {1, 1, 1, 0.01, 1}, z5[5] = {1.1, 1.1, 1.1, 1.0, 2.0};
    int64_t s5[5] = {1, 1, 1, 200, 1};
    double after;
    int ok;
    CHECK_EQ_INT(ledger_check(l, "proj-42", 1.0, 2.0, 1, 1e-5, 100.0, &after, &ok), 0);
    CHECK_NEAR(after, acct_eps(q5, z5, s5, 5, 1e-5), 1e-12 * after);
    CHECK_EQ_INT(ok, 1);
    CHECK_EQ_INT(ledger_check(l, "proj-42", 1.0, 2.0, 1, 1e-5, after - 1e-9, NULL, &ok), 0);
    CHECK_EQ_INT(ok, 0);
    CHECK_EQ_INT(ledger_check(l, "proj-42", 1.0, 2.0, 1, 1e-5, after, NULL, &ok), 0);
    CHECK_EQ_INT(ok, 1); /* exactly at the limit is allowed */
    ledger_free(l);
}

TEST(ledger_delta_is_the_smallest_asked_and_totals_compose_across_projects)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    CHECK_EQ_INT(ledger_record(l, "a", 1, 1.5, 2, 1e-5, 1), 0);
    CHECK_EQ_INT(ledger_record(l, "a", 1, 1.5, 1, 1e-6, 2), 0);
    CHECK_EQ_INT(ledger_record(l, "a", 1, 1.5, 1, 1e-4, 3), 0); /* a larger δ does not loosen it */
    CHECK_EQ_INT(ledger_record(l, "b.x:y_Z-9", 0.1, 1.0, 50, 1e-5, 4), 0);
    ledger_entry e;
    CHECK_EQ_INT(ledger_find(l, "a", &e), 0);
    double q = 1, z = 1.5;
    int64_t s = 4;
    CHECK(e.delta == 1e-6);
    CHECK_NEAR(e.epsilon, acct_eps(&q, &z, &s, 1, 1e-6), 1e-12);
    /* a what-if with a larger δ is still reported at the project's smaller one */
    double after;
    int ok;
    CHECK_EQ_INT(ledger_check(l, "a", 1, 1.5, 1, 1e-3, 100, &after, &ok), 0);
    s = 5;
    CHECK_NEAR(after, acct_eps(&q, &z, &s, 1, 1e-6), 1e-12);
    double qq[2] = {1, 0.1}, zz[2] = {1.5, 1.0}, tot;
    int64_t ss[2] = {4, 50};
    CHECK_EQ_INT(ledger_total(l, 1e-5, &tot), 0);
    CHECK_NEAR(tot, acct_eps(qq, zz, ss, 2, 1e-5), 1e-12 * tot);
    CHECK_EQ_INT(ledger_total(l, 0, &tot), AF_ERANGE);
    ledger_free(l);
}

TEST(ledger_no_noise_means_infinite_epsilon_recorded_and_refused)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    double after = 0;
    int ok = -1;
    CHECK_EQ_INT(ledger_check(l, "p", 1, 0, 1, 1e-5, 1e9, &after, &ok), 0);
    CHECK(isinf(after) && ok == 0);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 0, 1, 1e-5, 5), 0); /* what happened is recorded */
    ledger_free(l);
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    ledger_entry e;
    CHECK_EQ_INT(ledger_find(l, "p", &e), 0);
    CHECK(isinf(e.epsilon));
    CHECK_EQ_INT(ledger_check(l, "p", 1, 5, 1, 1e-5, 1e9, &after, &ok), 0);
    CHECK(ok == 0);
    ledger_free(l);
}

TEST(ledger_bad_arguments_are_refused_and_write_nothing)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open("", &l), AF_EINVAL);
    CHECK(l == NULL);
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    char longid[LEDGER_MAX_ID + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    const char *ids[] = {"", "a b", "a\nb", "é", longid, "x/y"};
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        CHECK_EQ_INT(ledger_record(l, ids[i], 1, 1, 1, 1e-5, 1), AF_EINVAL);
        CHECK(strstr(af_errmsg(), "project id") != NULL);
    }
    CHECK_EQ_INT(ledger_record(l, NULL, 1, 1, 1, 1e-5, 1), AF_EINVAL);
    CHECK_EQ_INT(ledger_record(l, "p", 1.5, 1, 1, 1e-5, 1), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "q = 1.5") != NULL);
    CHECK_EQ_INT(ledger_record(l, "p", -0.1, 1, 1, 1e-5, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, -1, 1, 1e-5, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, NAN, 1, 1e-5, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 1, -1, 1e-5, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 1, 1, 0, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 1, 1, 1, 1), AF_ERANGE);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 1, 1, 1e-5, -5), AF_ERANGE);
    int ok = 7;
    double after = 7;
    CHECK_EQ_INT(ledger_check(l, "p", 1, 1, 1, 1e-5, 0, &after, &ok), AF_ERANGE);
    CHECK(strstr(af_errmsg(), "limit") != NULL);
    CHECK(ok == 7 && after == 7); /* outputs unchanged */
    CHECK_EQ_INT(ledger_count(l), 0);
    size_t len;
    CHECK(slurp(path, &len) == NULL);
    ledger_free(l);
}

TEST(ledger_failed_write_changes_nothing_in_memory)
{
    char path[600];
    snprintf(path, sizeof path, "%s/no/such/dir/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    CHECK_EQ_INT(ledger_record(l, "p", 1, 1, 1, 1e-5, 1), AF_EIO);
    CHECK(strstr(af_errmsg(), "ledger") != NULL);
    CHECK_EQ_INT(ledger_count(l), 0);
    ledger_free(l);
}

/* A valid ledger file with two projects, for the corruption tests. */
static int make_valid(const char *path)
{
    ledger *l = NULL;
    int rc = ledger_open(path, &l);
    if (!rc)
        rc = ledger_record(l, "proj1", 1, 1.2, 3, 1e-5, 1700000000);
    if (!rc)
        rc = ledger_record(l, "proj2", 0.05, 1.0, 40, 1e-6, 1700000100);
    ledger_free(l);
    return rc;
}

/* Rewrites the end line's checksum so that only the field edit itself is wrong. */
static void fix_checksum(char *text, size_t len)
{
    char *end = strstr(text, "\nend ");
    if (!end)
        return;
    end++;
    unsigned char sum[16];
    char hex[33];
    crypto_generichash(sum, 16, (const unsigned char *)text, (unsigned long long)(end - text), NULL, 0);
    sodium_bin2hex(hex, sizeof hex, sum, 16);
    char *h = strrchr(end, ' ') + 1;
    if ((size_t)(h - text) + 32 <= len)
        memcpy(h, hex, 32);
}

TEST(ledger_corrupt_files_are_refused_with_the_line_and_never_reset)
{
    const char *dir = t_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/l", dir);
    CHECK_EQ_INT(make_valid(path), 0);
    size_t len;
    char *good = slurp(path, &len);
    CHECK(good != NULL);
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0); /* the valid file opens */
    CHECK_EQ_INT(ledger_count(l), 2);
    ledger_free(l);
    l = NULL;

    enum { N_CASES = 14 };
    for (int c = 0; c < N_CASES; c++) {
        char *t = malloc(len + 64);
        CHECK(t != NULL);
        memcpy(t, good, len + 1);
        size_t n = len;
        char *rdp = strstr(t, " rdp ") + 5;
        switch (c) {
        case 0: n = 0; break;                                      /* empty */
        case 1: n = len / 2; break;                                /* cut mid-way */
        case 2: n = (size_t)(strstr(t, "\nend ") - t) + 1; break;  /* end line lost */
        case 3: n = len - 1; break;                                /* last newline lost */
        case 4: rdp[2] = rdp[2] == '3' ? '4' : '3'; break;         /* one digit flipped */
        case 5: memcpy(t, "artificien-privacy-ledger v2", 28); break;
        case 6: strstr(t, "\nend ")[5] = '7'; break;               /* wrong count */
        case 7: { char *h = strrchr(t, ' ') + 1; h[0] = h[0] == 'a' ? 'b' : 'a'; } break;
        case 8: /* ε edited, checksum recomputed: caught by the curve */
            { char *e = strstr(t, " epsilon ") + 9; e[0] = e[0] == '1' ? '2' : '1'; fix_checksum(t, n); } break;
        case 9: /* δ out of range, checksum recomputed */
            { char *d = strstr(t, " delta ") + 7; memcpy(d, "1.5", 3); fix_checksum(t, n); } break;
        case 10: /* the second project renamed to the first, checksum recomputed */
            { strstr(t, "project proj2 ")[12] = '1'; fix_checksum(t, n); } break;
        case 11: /* a negative RDP value, checksum recomputed */
            { rdp[0] = '-'; fix_checksum(t, n); } break;
        case 12: /* an RDP value removed (count wrong), checksum recomputed */
            { char *sp = strchr(rdp, ' '); memmove(rdp, sp + 1, strlen(sp + 1) + 1); n = strlen(t); fix_checksum(t, n); } break;
        case 13: /* a NUL byte in the middle */
            t[10] = '\0'; break;
        }
        spit(path, t, n);
        int rc = ledger_open(path, &l);
        CHECK_MSG(rc == AF_EFORMAT, "case %d: rc %d (%s)", c, rc, af_errmsg());
        CHECK_MSG(l == NULL, "case %d: ledger returned", c);
        CHECK_MSG(strstr(af_errmsg(), "line") && strstr(af_errmsg(), path), "case %d: message '%s'", c, af_errmsg());
        size_t n2;
        char *after = slurp(path, &n2);
        CHECK_MSG(after && n2 == n && memcmp(after, t, n) == 0, "case %d: the file was changed", c);
        free(after);
        free(t);
    }
    /* the valid file back: it opens again */
    spit(path, good, len);
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    ledger_free(l);
    free(good);
}

TEST(ledger_refuses_to_overwrite_another_writer)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *a = NULL, *b = NULL;
    CHECK_EQ_INT(ledger_open(path, &a), 0);
    CHECK_EQ_INT(ledger_open(path, &b), 0);
    CHECK_EQ_INT(ledger_record(a, "p", 1, 1, 1, 1e-5, 10), 0);
    size_t len;
    char *after_a = slurp(path, &len);
    CHECK(after_a != NULL);
    /* b opened before a wrote: recording would lose a's participation */
    CHECK_EQ_INT(ledger_record(b, "p", 1, 1, 1, 1e-5, 11), AF_ESTATE);
    CHECK(strstr(af_errmsg(), "changed since it was opened") != NULL);
    CHECK_EQ_INT(ledger_count(b), 0);
    size_t len2;
    char *now = slurp(path, &len2);
    CHECK(now && len2 == len && memcmp(now, after_a, len) == 0);
    free(now);
    /* a, the last writer, goes on; a reopened b sees both */
    CHECK_EQ_INT(ledger_record(a, "p", 1, 1, 1, 1e-5, 12), 0);
    ledger_free(b);
    CHECK_EQ_INT(ledger_open(path, &b), 0);
    ledger_entry e;
    CHECK_EQ_INT(ledger_find(b, "p", &e), 0);
    CHECK_EQ_INT(e.steps, 2);
    /* the file removed under a: refused too, not silently recreated from memory */
    remove(path);
    CHECK_EQ_INT(ledger_record(a, "p", 1, 1, 1, 1e-5, 13), AF_ESTATE);
    free(after_a);
    ledger_free(a);
    ledger_free(b);
}

TEST(ledger_round_trips_extreme_values_exactly)
{
    char path[600];
    snprintf(path, sizeof path, "%s/l", t_tmpdir());
    ledger *l = NULL;
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    /* a minute q gives subnormal RDP values; a huge z tiny ones; both must read back */
    CHECK_EQ_INT(ledger_record(l, "tiny", 1e-160, 1.0, 1, 1e-5, 1), 0);
    CHECK_EQ_INT(ledger_record(l, "quiet", 1.0, 1e5, 3, 0.5e-9, 2), 0);
    ledger_entry a, b;
    CHECK_EQ_INT(ledger_find(l, "tiny", &a), 0);
    CHECK_EQ_INT(ledger_find(l, "quiet", &b), 0);
    ledger_free(l);
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    ledger_entry a2, b2;
    CHECK_EQ_INT(ledger_find(l, "tiny", &a2), 0);
    CHECK_EQ_INT(ledger_find(l, "quiet", &b2), 0);
    CHECK(a2.epsilon == a.epsilon && b2.epsilon == b.epsilon && b2.delta == 0.5e-9);
    double t1, t2;
    CHECK_EQ_INT(ledger_total(l, 1e-5, &t1), 0);
    ledger_free(l);
    CHECK_EQ_INT(ledger_open(path, &l), 0);
    CHECK_EQ_INT(ledger_total(l, 1e-5, &t2), 0);
    CHECK(t1 == t2); /* every RDP value read back bit for bit */
    ledger_free(l);
}
