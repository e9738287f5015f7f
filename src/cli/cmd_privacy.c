/* cmd_privacy.c — `artificien privacy`: the RDP accountant of fed/accountant.h on the command line.
 *
 * Three questions about T rounds of DP-FedAvg (Poisson sampling rate q, noise multiplier z):
 *   --q --noise --rounds --delta             → ε and the best Rényi order;
 *   --q --rounds --delta --epsilon           → the smallest noise multiplier reaching ε;
 *   --q --noise --delta --epsilon (no rounds)→ the largest number of rounds within ε.
 * Prints one human line, or one JSON object with --json. Only the cli layer prints; the math
 * lives in fed/accountant.c. Bad values are refused before any computation. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "core/err.h"
#include "fed/accountant.h"

static void json_double(double v)
{
    if (isfinite(v))
        printf("%.10g", v);
    else
        printf("null");
}

int cmd_privacy(int argc, char **argv)
{
    double q = NAN, z = NAN, delta = NAN, eps_target = NAN;
    int rounds = -1, json = 0;
    const char *orders_name = "default";
    const arg_opt opts[] = {
        {"q", ARG_FLOAT, &q, "sampling rate per round: devices per round / population, in (0, 1]"},
        {"noise", ARG_FLOAT, &z, "noise multiplier z = noise std / clip norm (>= 0)"},
        {"rounds", ARG_INT, &rounds, "number of rounds (steps) T >= 1"},
        {"delta", ARG_FLOAT, &delta, "target delta, in (0, 1) (e.g. 1e-5, below 1/population)"},
        {"epsilon", ARG_FLOAT, &eps_target, "target epsilon: solve for --noise (or for --rounds if --noise is given)"},
        {"orders", ARG_STR, &orders_name, "Renyi orders: default (dp-accounting's 156) or tfp (TF Privacy's 72)"},
        {"json", ARG_FLAG, &json, "print one JSON object"},
        {0},
    };
    char *pos[1];
    int npos, r = args_parse("privacy", "--q Q --noise Z --rounds T --delta D [--epsilon E] [--json]",
                             opts, argc, argv, pos, &npos, 0);
    if (r)
        return r > 0 ? 0 : 2;

    const double *orders;
    size_t n_orders;
    if (strcmp(orders_name, "default") == 0) {
        orders = acct_default_orders;
        n_orders = ACCT_N_DEFAULT_ORDERS;
    } else if (strcmp(orders_name, "tfp") == 0) {
        orders = acct_tfp_orders;
        n_orders = ACCT_N_TFP_ORDERS;
    } else {
        cli_fail("privacy", "--orders must be 'default' or 'tfp', got '%s'", orders_name);
        return 2;
    }
    const int solve_noise = !isnan(eps_target) && isnan(z);
    const int solve_rounds = !isnan(eps_target) && !isnan(z) && rounds < 0;
    if (isnan(q)) {
        cli_fail("privacy", "--q is required (the sampling rate per round, in (0, 1])");
        return 2;
    }
    if (!(q > 0.0 && q <= 1.0)) {
        cli_fail("privacy", "--q must be in (0, 1] (devices per round / population), got %g", q);
        return 2;
    }
    if (isnan(delta)) {
        cli_fail("privacy", "--delta is required (e.g. 1e-5)");
        return 2;
    }
    if (!(delta > 0.0 && delta < 1.0)) {
        cli_fail("privacy", "--delta must be in (0, 1), got %g", delta);
        return 2;
    }
    if (isnan(z) && !solve_noise) {
        cli_fail("privacy", "--noise is required (or give --epsilon to solve for it)");
        return 2;
    }
    if (!isnan(z) && !(z >= 0.0)) {
        cli_fail("privacy", "--noise must be >= 0, got %g", z);
        return 2;
    }
    if (rounds < 0 && !solve_rounds) {
        cli_fail("privacy", "--rounds is required (or give --noise and --epsilon to solve for it)");
        return 2;
    }
    if (rounds == 0 || rounds < -1) {
        cli_fail("privacy", "--rounds must be >= 1, got %d", rounds);
        return 2;
    }
    if (!isnan(eps_target) && !(eps_target > 0.0)) {
        cli_fail("privacy", "--epsilon must be > 0, got %g", eps_target);
        return 2;
    }

    double eps = NAN, order = 0.0;
    int64_t steps = rounds;
    if (solve_noise) {
        if (acct_solve_noise(q, steps, delta, eps_target, orders, n_orders, &z))
            return cli_fail("privacy", "%s", af_errmsg());
    } else if (solve_rounds) {
        if (acct_max_steps(q, z, delta, eps_target, orders, n_orders, &steps))
            return cli_fail("privacy", "%s", af_errmsg());
    }
    /* ε actually reached by (q, z, steps): what the user will spend, with its best order */
    double rdp[ACCT_MAX_ORDERS];
    int rc = steps == INT64_MAX ? 0 : acct_compute_rdp(q, z, steps, orders, n_orders, rdp);
    if (!rc && steps != INT64_MAX)
        rc = acct_get_epsilon(orders, rdp, n_orders, delta, &eps, &order);
    if (rc)
        return cli_fail("privacy", "%s", af_errmsg());

    if (json) {
        printf("{\"q\": %.10g, \"noise\": ", q);
        json_double(z);
        printf(", \"rounds\": ");
        if (steps == INT64_MAX)
            printf("null");
        else
            printf("%lld", (long long)steps);
        printf(", \"delta\": %.10g, \"epsilon\": ", delta);
        json_double(eps);
        printf(", \"order\": ");
        json_double(order);
        printf(", \"target_epsilon\": ");
        json_double(eps_target);
        printf(", \"solved\": \"%s\", \"orders\": \"%s\"}\n",
               solve_noise ? "noise" : solve_rounds ? "rounds" : "epsilon", orders_name);
        return 0;
    }
    if (solve_noise)
        printf("noise multiplier %.6f reaches epsilon <= %g at delta %g after %lld rounds with q = %g "
               "(epsilon %.6f, best order %g)\n",
               z, eps_target, delta, (long long)steps, q, eps, order);
    else if (solve_rounds && steps == INT64_MAX)
        printf("rounds unlimited: epsilon stays <= %g at delta %g with q = %g, noise multiplier %g\n",
               eps_target, delta, q, z);
    else if (solve_rounds)
        printf("rounds %lld fit epsilon <= %g at delta %g with q = %g, noise multiplier %g "
               "(epsilon %.6f, best order %g)\n",
               (long long)steps, eps_target, delta, q, z, eps, order);
    else if (isinf(eps))
        printf("epsilon inf at delta %g after %lld rounds with q = %g, noise multiplier %g "
               "(no noise: no privacy guarantee)\n", delta, (long long)steps, q, z);
    else
        printf("epsilon %.6f at delta %g (best order %g) after %lld rounds with q = %g, noise multiplier %g%s\n",
               eps, delta, order, (long long)steps, q, z,
               isnan(eps_target) ? "" : eps <= eps_target ? " (within the target)" : " (EXCEEDS the target)");
    return 0;
}
