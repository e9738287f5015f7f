"""gen_accountant_refs.py — prints the reference numbers pasted into tests/fed/test_accountant.c.

Run with Google's dp-accounting installed (`pip install dp-accounting`; v0.6.0 produced the
committed numbers). Not used at build or test time: the C tests carry the numbers as constants.
"""
import importlib.metadata
import math

from dp_accounting.rdp import rdp_privacy_accountant as R

DEF = list(R.DEFAULT_RDP_ORDERS)
TFP = [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + list(range(5, 64)) + [128, 256, 512]


def rdp(q, z, steps, orders):
    return R._compute_rdp_poisson_subsampled_gaussian(q, z, orders) * steps


def eps(q, z, steps, delta, orders=DEF):
    return R.compute_epsilon(orders, rdp(q, z, steps, orders), delta)


print("/* dp-accounting", importlib.metadata.version("dp-accounting"), "*/")
print("/* rdp: q, z, steps, order, rdp */")
for q, z, steps, order in [(0.1, 2, 10, 5), (0.01, 2.5, 50, 1.5), (0.01, 2.5, 50, 2.5),
                           (0.01, 2.5, 50, 5), (0.01, 2.5, 50, 50), (0.01, 2.5, 50, 100),
                           (1e-7, 0.1, 1, 1.01), (1e-6, 0.1, 1, 256), (1e-5, 0.1, 1, 256.1),
                           (0.01, 10, 1, 20), (0.1, 100, 1, 20.5), (0.99, 0.1, 1, 256),
                           (0.999, 100, 1, 256.1), (0.3, 0.7, 3, 3.3), (0.5, 1.0, 1, 7.5),
                           (0.02, 0.9, 1, 1024)]:
    print("    {%r, %r, %d, %r, %.17g}," % (q, z, steps, order, rdp(q, z, steps, [order])[0]))

print("/* eps: q, z, steps, delta, eps, order (default orders) */")
for q, z, steps, delta in [(150 / 60000, 1.3, 6000, 1e-5), (0.01, 1.1, 10000, 1e-5),
                           (0.001, 0.8, 50000, 1e-6), (0.1, 2.0, 100, 1e-5),
                           (0.05, 0.5, 10, 1e-5), (1.0, 5.0, 10, 1e-5), (0.02, 10.0, 1000, 1e-8),
                           (0.01, 1.0, 1000, 1e-4), (0.2, 0.6, 50, 1e-3), (0.005, 3.0, 200, 1e-5)]:
    e, o = eps(q, z, steps, delta)
    print("    {%r, %r, %d, %r, %.17g, %r}," % (q, z, steps, delta, e, float(o)))

print("/* eps with the TF Privacy list */")
e, o = eps(150 / 60000, 1.3, 6000, 1e-5, TFP)
print("    %.17g, %r" % (e, float(o)))

print("/* composition: q=1e-4 z=0.4 40000 steps + q=0.1 z=2 100 steps, delta 1e-5 */")
r = rdp(1e-4, 0.4, 40000, DEF) + rdp(0.1, 2, 100, DEF)
e, o = R.compute_epsilon(DEF, r, 1e-5)
print("    %.17g, %r" % (e, float(o)))

print("/* delta: q, z, steps, eps, delta, order */")
for q, z, steps, ep in [(150 / 60000, 1.3, 6000, 0.724223), (0.01, 1.1, 10000, 2.0),
                        (0.1, 2.0, 100, 0.5), (0.05, 0.5, 10, 3.0)]:
    d, o = R.compute_delta(DEF, rdp(q, z, steps, DEF), ep)
    print("    {%r, %r, %d, %r, %.17g, %r}," % (q, z, steps, ep, d, float(o)))

print("/* noise threshold z*: q, steps, delta, target eps, z* (bisection to 1e-10) */")
for q, steps, delta, target in [(0.01, 1000, 1e-5, 1.0), (150 / 60000, 6000, 1e-5, 0.5),
                                (0.1, 100, 1e-6, 3.0)]:
    lo, hi = 0.01, 100.0
    while hi / lo - 1 > 1e-10:
        mid = math.sqrt(lo * hi)
        if eps(q, mid, steps, delta)[0] <= target:
            hi = mid
        else:
            lo = mid
    print("    {%r, %d, %r, %r, %.12g}," % (q, steps, delta, target, hi))
