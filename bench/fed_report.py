#!/usr/bin/env python3
"""fed_report.py OUT [PARTITION] — prints the tables of bench/fed.sh from the JSON in OUT.

1. FedAvg IID: test accuracy per round, PyTorch loop vs artificien at 1 and 2 threads, then
   seconds per round (evaluation included; the median of the repetitions) and the speed-up
   over PyTorch (target >= 5x at 1 thread, more at 2). Checks that every artificien run gave
   the same accuracies (it must: the simulation is bitwise thread-count independent).
2. Strategies under label skew: final, best and mean-of-last-5-rounds test accuracy, as
   mean ± standard deviation over the seeds run.
Also writes both tables as Markdown to OUT/report.md (what docs/simulation.md quotes).
Reads only; plain Python 3, no numpy.
"""
import glob
import json
import math
import os
import re
import sys

out = sys.argv[1]
partition = sys.argv[2] if len(sys.argv) > 2 else "?"
md = []


def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def loadavg(name):
    try:
        with open(os.path.join(out, name + ".load")) as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def mean_sd(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def fmt(x, spec=".4f"):
    return format(x, spec) if x is not None else "-"


# ---- 1. IID side by side ----
def reps(prefix):
    """The JSON of every repetition PREFIX_r1, PREFIX_r2, … (in order)."""
    out_, k = [], 1
    while True:
        j = load(f"{prefix}_r{k}")
        if j is None:
            return out_
        out_.append(j)
        k += 1


def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2 if xs else None


tr, r1, r2 = reps("torch_iid_t1"), reps("ours_iid_t1"), reps("ours_iid_t2")
of = load("ours_iid_t1_fedeval")
if r1 and r2:
    torch, o1, o2 = (tr[0] if tr else None), r1[0], r2[0]
    acc_t = torch["summary"]["acc_per_round"] if torch else []
    acc_1 = [r["test_accuracy"] for r in o1["rounds"]]
    acc_2 = [r["test_accuracy"] for r in o2["rounds"]]
    print()
    print("FedAvg, IID, 100 devices, C=0.1, E=1, B=10, SGD lr 0.05: test accuracy per round")
    print(f"{'round':>5} {'pytorch':>8} {'ours 1t':>8} {'ours 2t':>8}")
    md.append("| round | PyTorch loop | artificien, 1 thread | artificien, 2 threads |")
    md.append("|---:|---:|---:|---:|")
    for i in range(len(acc_1)):
        t = acc_t[i] if i < len(acc_t) else None
        print(f"{i + 1:>5} {fmt(t):>8} {fmt(acc_1[i]):>8} {fmt(acc_2[i]):>8}")
        md.append(f"| {i + 1} | {fmt(t)} | {fmt(acc_1[i])} | {fmt(acc_2[i])} |")
    same = all([r["test_accuracy"] for r in j["rounds"]] == acc_1 for j in r1 + r2)
    print(f"every artificien run (1 and 2 threads, {len(r1)} repetitions) gives the same accuracies: "
          f"{'yes' if same else 'NO (bug)'}")
    if acc_t:
        n = min(len(acc_t), len(acc_1))
        mad = sum(abs(acc_t[i] - acc_1[i]) for i in range(n)) / n
        print(f"mean |pytorch - ours| over rounds: {mad:.4f}; last 5 rounds: pytorch "
              f"{sum(acc_t[-5:]) / 5:.4f}, ours {sum(acc_1[-5:]) / 5:.4f}")
        md.append("")
        md.append(f"Mean absolute difference per round {mad:.4f}; mean of the last 5 rounds: PyTorch "
                  f"{sum(acc_t[-5:]) / 5:.4f}, artificien {sum(acc_1[-5:]) / 5:.4f}.")

    print()
    print(f"{'seconds per round (eval included)':40} {'median':>7} {'runs':>22} {'vs pytorch':>10}")
    md.append("")
    md.append("| seconds per round, evaluation included | median | every run | speed-up over PyTorch (medians) |")
    md.append("|---|---:|---|---:|")
    tps = median([j["summary"]["mean_round_s"] for j in tr]) if tr else None
    rows = [("PyTorch loop, 1 thread", [j["summary"]["mean_round_s"] for j in tr]),
            ("artificien sim, 1 thread", [j["seconds_per_round"] for j in r1]),
            ("artificien sim, 2 threads", [j["seconds_per_round"] for j in r2])]
    if of:
        rows.append(("artificien, 1 thread, + federated eval", [of["seconds_per_round"]]))
    for name, xs in rows:
        s = median(xs)
        ratio = f"{tps / s:.1f}x" if tps and s else "-"
        runs = " ".join(f"{x:.3f}" for x in xs)
        print(f"{name:40} {fmt(s, '.3f'):>7} {runs:>22} {ratio:>10}")
        md.append(f"| {name} | {fmt(s, '.3f')} | {runs} | {ratio} |")
    if tr:
        ev = median([sum(r["eval_s"] for r in j["rounds"]) / len(j["rounds"]) for j in tr])
        trs = median([j["summary"]["mean_train_s_per_round"] for j in tr])
        fl = median([j["summary"]["foreign_load"] for j in tr])
        loads = " ".join(loadavg(f"torch_iid_t1_r{k + 1}") for k in range(len(tr)))
        print(f"PyTorch: {trs:.2f} s training + {ev:.2f} s evaluation per round; other processes kept "
              f"{fl:.2f} cores busy meanwhile (load average at each start: {loads})")
        md.append("")
        md.append(f"PyTorch spent {trs:.2f} s training and {ev:.2f} s evaluating per round (medians); "
                  f"other processes kept {fl:.2f} cores busy meanwhile (load averages at the starts: {loads}).")
        m1, m2 = median([j["seconds_per_round"] for j in r1]), median([j["seconds_per_round"] for j in r2])
        print(f"target >= 5x at 1 thread: {'met' if tps / m1 >= 5 else 'NOT met'} ({tps / m1:.1f}x); "
              f"2 threads vs 1: {m1 / m2:.2f}x")

# ---- 2. strategies under skew ----
runs = {}
for p in sorted(glob.glob(os.path.join(out, "skew_*_s*.json"))):
    m = re.match(r"skew_(.+)_s(\d+)\.json$", os.path.basename(p))
    j = load(os.path.basename(p)[:-5])
    if m and j:
        runs.setdefault(m.group(1), []).append(j)
if runs:
    order = ["fedavg", "fedprox", "fedprox_mu0.1", "scaffold", "fednova", "fedavgm", "fedavgm_eta0.3",
             "fedadam", "fedadam_eta0.03", "fedyogi", "fedavg_lr0.02", "scaffold_lr0.02", "fedavg_E5",
             "fedprox_E5", "fedprox_mu0.1_E5"]
    names = [n for n in order if n in runs] + sorted(n for n in runs if n not in order)
    nseeds = max(len(v) for v in runs.values())
    nrounds = len(next(iter(runs.values()))[0]["rounds"])
    print()
    print(f"Strategies on {partition}, 100 devices, 10 per round, {nrounds} rounds, E=1, B=10, "
          f"lr 0.05 (else as the name says); mean ± sd over {nseeds} seed(s)")
    print(f"{'strategy':16} {'final':>15} {'best':>15} {'last 5 rounds':>15} {'s/round':>8}")
    md.append("")
    md.append(f"| strategy | final accuracy | best accuracy | mean of last 5 rounds | s/round |")
    md.append("|---|---:|---:|---:|---:|")
    for n in names:
        fin, best, last5, spr = [], [], [], []
        for j in runs[n]:
            a = [r["test_accuracy"] for r in j["rounds"] if r["test_accuracy"] is not None]
            fin.append(a[-1])
            best.append(max(a))
            last5.append(sum(a[-5:]) / len(a[-5:]))
            spr.append(j["seconds_per_round"])
        cells = []
        for xs in (fin, best, last5):
            m, sd = mean_sd(xs)
            cells.append(f"{m:.4f} ± {sd:.4f}")
        print(f"{n:16} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15} {sum(spr) / len(spr):8.3f}")
        md.append(f"| {n} | {cells[0]} | {cells[1]} | {cells[2]} | {sum(spr) / len(spr):.3f} |")

with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
