/* ledger.h — the device's own privacy budget: ε spent per project, kept in a small file.
 *
 * Layer `fed` (core, fed/accountant, libsodium for the checksum). The device library calls
 * it before it accepts a training task: "would this task take project P over the limit the
 * app set?", and records the participation before the update leaves the device. Per project
 * it keeps the Rényi-DP curve (one value per order of fed/accountant.h), not just ε, so that
 * composing tasks is exact; ε at δ is derived from the curve. Never uses SQLite, the network
 * or server code; never prints. A corrupt file is refused with AF_EFORMAT and a message
 * naming the line — it is never reset or rewritten silently (the budget would restart at 0).
 *
 *   ledger *l;
 *   if (ledger_open("/data/app/privacy.ledger", &l)) { ... af_errmsg() ... }
 *   int ok; double eps_after;
 *   ledger_check(l, "proj-42", 1.0, 1.1, 1, 1e-5, app_limit, &eps_after, &ok);
 *   if (ok) { ledger_record(l, "proj-42", 1.0, 1.1, 1, 1e-5, 0); ...train, upload... }
 *   ledger_free(l);
 *
 * File format (text, version 1; docs/privacy.md §7):
 *   artificien-privacy-ledger v1
 *   orders N o_1 … o_N
 *   project ID epsilon E delta D updated UNIX steps T rdp r_1 … r_N      (one line per project)
 *   end K CHECKSUM          (K projects; CHECKSUM = BLAKE2b-128 hex of every byte before "end")
 * Numbers are written and read in the C locale whatever the app's locale. The file is
 * replaced atomically (core/fileio.h: temp file, fsync, rename) on every record.
 * One ledger object per file per process; not thread-safe (the caller serialises). If another
 * process changed the file since it was opened, ledger_record refuses (AF_ESTATE) rather than
 * overwrite that process's records.
 */
#ifndef AF_FED_LEDGER_H
#define AF_FED_LEDGER_H

#include <stddef.h>
#include <stdint.h>

/* Project ids: 1..LEDGER_MAX_ID characters of [A-Za-z0-9._:-]. */
#define LEDGER_MAX_ID 128

typedef struct ledger ledger;

/* One project's line, as a plain copy. */
typedef struct ledger_entry {
    char project[LEDGER_MAX_ID + 1];
    double epsilon;  /* ε spent, at delta (+inf after a task without noise) */
    double delta;    /* the smallest δ any recorded task of the project asked for */
    int64_t updated; /* unix seconds of the last record */
    int64_t steps;   /* Gaussian-mechanism steps composed so far */
} ledger_entry;

/* Opens the ledger at path. A missing file gives an empty ledger (the file is created on the
 * first record); an existing file must parse completely: header, order list, every project
 * line (valid id, no repeat, δ in (0, 1), RDP values ≥ 0 or inf, the stored ε equal to the
 * one its curve gives), and the end line with the right count and checksum.
 * Returns 0; AF_EFORMAT (corrupt: the message names the file, the line and what was
 * expected; an empty file is corrupt too), AF_EIO (cannot read), AF_EINVAL (NULL/empty
 * path), AF_ENOMEM. *out (free with ledger_free) is set only on success. */
int ledger_open(const char *path, ledger **out);

/* Frees; NULL is fine. Never writes. */
void ledger_free(ledger *l);

/* Number of projects, and a copy of project i (0 ≤ i < count, in file order). ledger_get
 * returns 0 or AF_ERANGE. */
size_t ledger_count(const ledger *l);
int ledger_get(const ledger *l, size_t i, ledger_entry *out);

/* A copy of project's line. Returns 0, AF_ENOTFOUND (never recorded: ε spent is 0) or
 * AF_EINVAL (malformed id). */
int ledger_find(const ledger *l, const char *project, ledger_entry *out);

/* What-if, changes nothing: ε of `project` at δ' = min(its recorded δ, delta) after composing
 * `steps` Poisson-subsampled Gaussian steps with rate q ∈ [0, 1] and noise multiplier z ≥ 0
 * on top of what it has spent. *eps_after (may be NULL) gets it; *allowed = 1 if it is
 * ≤ eps_limit (> 0), else 0. z = 0 gives ε = +inf (never allowed). Returns 0, or
 * AF_EINVAL/AF_ERANGE naming the bad argument (outputs unchanged).
 * What to pass: a device sees only the rounds it is selected for. Charging each accepted
 * task as (q = 1, z, steps = 1) is always sound (no amplification by sampling is claimed).
 * Charging (q < 1, z, T) is only sound for the whole run of T rounds at once, selected or
 * not — e.g. when the device joins a project whose plan fixes q, z and T. */
int ledger_check(const ledger *l, const char *project, double q, double z, int64_t steps,
                 double delta, double eps_limit, double *eps_after, int *allowed);

/* Records a participation: composes (q, z, steps) into project's curve (creating the line
 * if new), sets its δ to min(recorded, delta) and `updated` to now (unix seconds; 0 = the
 * current time), and rewrites the file atomically before returning. Does not check a limit
 * (call ledger_check first): what happened is recorded. Call it before the update leaves
 * the device: a crash after recording over-counts, never under-counts.
 * Returns 0; AF_EINVAL/AF_ERANGE (bad argument), AF_ESTATE (the file changed on disk since
 * it was opened or last written, e.g. by another process: reopen), AF_EIO (write failed),
 * AF_ENOMEM. On any error the ledger in memory and the file are unchanged. */
int ledger_record(ledger *l, const char *project, double q, double z, int64_t steps,
                  double delta, int64_t now);

/* ε at delta ∈ (0, 1) of all projects composed together (their curves added): what the device
 * has spent across every project, for an app-wide limit. 0 for an empty ledger.
 * Returns 0 or AF_ERANGE. */
int ledger_total(const ledger *l, double delta, double *eps);

#endif
