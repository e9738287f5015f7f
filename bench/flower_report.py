#!/usr/bin/env python3
"""flower_report.py RAW OUT.json — the table of bench/flower.sh: Artificien's federation
(one column per --retry-after) against Flower's, and the ratio Flower / Artificien (against
the first Artificien column). Reads the raw files flower.sh left in RAW, writes one summary
JSON to OUT.json and the table as Markdown to RAW/report.md (what docs/federation-bench.md
quotes). Reads and writes nothing else; plain Python 3, no numpy.

Rows: wall seconds from the first round's start to the last commit (ours: the coordinator's
opened_at/closed_at; Flower: the strategy's configure_fit, once every client is connected,
to aggregate_fit), seconds per round, final test accuracy, peak RSS (VmHWM) of the
coordinator/server (Flower's before it imports torch for the final evaluation) and of the
largest device process, the coordinator/server's CPU seconds during the rounds and from its
start to the last round, then the training alone (every shard once, one process, 1 thread),
in CPU seconds (less sensitive to other processes than wall time), the floor it sets on a
round with min(cores, N) devices training at once, and what is left: the federation's
overhead per round (transport, serialisation, scheduling, waiting, and the devices slowing
each other down on shared cores); then the devices' CPU during the rounds and its excess
over the training alone, and how many cores other processes kept busy meanwhile.
"""
import json
import os
import sys


def load(raw, name):
    try:
        with open(os.path.join(raw, name)) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def loadavg(raw, name):
    try:
        with open(os.path.join(raw, name + ".load")) as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def ours_run(raw, ra, meta, local):
    tag = "ours_ra" + ra
    st, proc, ev = load(raw, tag + ".status.json"), load(raw, tag + ".proc.json"), load(raw, tag + ".eval.json")
    if not (st and proc and ev):
        return None
    rounds = [r for r in st["rounds"] if r["state"] == "committed"]
    wall = max(r["closed_at"] for r in rounds) - min(r["opened_at"] for r in rounds)
    tck = float(meta["clk_tck"])
    return {
        "name": f"Artificien (--retry-after {ra})", "retry_after": float(ra),
        "rounds": len(rounds), "attempts": len(st["rounds"]),
        "wall_s": wall, "s_per_round": wall / len(rounds),
        "round_s": [r["closed_at"] - r["opened_at"] for r in rounds],
        "final_acc": ev["accuracy"],
        "device_cpu_per_round_s": proc["workers_cpu_rounds_ticks"] / tck / len(rounds),
        # cores kept busy by other processes during the rounds (the status polls count here)
        "foreign_load": max(0.0, (proc["machine_busy_ticks"] - proc["workers_cpu_rounds_ticks"]
                                  - proc["coord_cpu_rounds_ticks"]) / tck / wall),
        "server_rss_mib": proc["coord_vm_hwm_kib"] / 1024,
        "client_rss_mib": max(proc["worker_vm_hwm_kib"]) / 1024,
        "client_rss_mib_mean": sum(proc["worker_vm_hwm_kib"]) / len(proc["worker_vm_hwm_kib"]) / 1024,
        "server_cpu_rounds_s": proc["coord_cpu_rounds_ticks"] / tck,
        "server_cpu_total_s": proc["coord_cpu_total_ticks"] / tck,
        "train_alone_s": local["train_cpu_s"] if local else None,
        "load": loadavg(raw, tag),
    }


def flower_run(raw, local):
    s = load(raw, "flower_server.json")
    if not s:
        return None
    cl = []
    try:
        with open(os.path.join(raw, "flower_clients.jsonl")) as f:
            cl = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        pass
    return {
        "name": "Flower", "rounds": s["rounds_done"], "wall_s": s["wall_s"],
        "s_per_round": s["s_per_round"], "round_s": [r["round_s"] for r in s["rounds"] if "round_s" in r],
        "final_acc": s["final_acc"],
        "device_cpu_per_round_s": (sum(c.get("cpu_rounds_s", 0.0) for c in cl) / s["rounds_done"]
                                   if cl and s["rounds_done"] else None),
        # the clients time their own training (thread CPU): the rest is Flower's, on devices
        "device_cpu_outside_training_s": (sum(c.get("cpu_rounds_s", 0.0) - c["train_cpu_s"] for c in cl)
                                          / s["rounds_done"] if cl and s["rounds_done"] else None),
        "server_rss_mib": s["vm_hwm_rounds_kib"] / 1024,
        "server_rss_mib_with_eval": s["vm_hwm_kib"] / 1024,
        "client_rss_mib": max(c["vm_hwm_kib"] for c in cl) / 1024 if cl else None,
        "client_rss_mib_mean": sum(c["vm_hwm_kib"] for c in cl) / len(cl) / 1024 if cl else None,
        "clients_reported": len(cl),
        "server_cpu_rounds_s": s["cpu_rounds_s"],
        "server_cpu_total_s": s["cpu_to_last_round_s"],
        "foreign_load": (max(0.0, (s["machine_busy_rounds_s"] - s["cpu_rounds_s"]
                                   - sum(c.get("cpu_rounds_s", 0.0) for c in cl)) / s["wall_s"])
                         if s.get("machine_busy_rounds_s") is not None and s["wall_s"] else None),
        "train_alone_s": local["train_cpu_s"] if local else None,
        "versions": {k: s.get(k) for k in ("flwr", "grpcio", "protobuf", "numpy", "torch", "python")},
        "load": loadavg(raw, "flower"),
    }


ROWS = [  # key, label, format, ratio shown (not for differences, whose small terms are noise)
    ("wall_s", "wall, first round start to last commit (s)", "%.2f", True),
    ("s_per_round", "seconds per round", "%.3f", True),
    ("median_round_s", "median round, open to commit (s)", "%.3f", True),
    ("final_acc", "final test accuracy", "%.4f", True),
    ("server_rss_mib", "coordinator/server peak RSS (MiB)", "%.1f", True),
    ("client_rss_mib", "device process peak RSS, largest (MiB)", "%.1f", True),
    ("server_cpu_rounds_s", "coordinator/server CPU during the rounds (s)", "%.3f", True),
    ("server_cpu_total_s", "coordinator/server CPU, start to last round (s)", "%.3f", True),
    ("train_alone_s", "training alone: every shard once, 1 thread (CPU s)", "%.2f", True),
    ("train_floor_s", "  → floor of a round on min(cores, N) threads (s)", "%.3f", True),
    ("overhead_s", "federation overhead per round (s)", "%.3f", False),
    ("device_cpu_per_round_s", "device CPU per round, all devices (s)", "%.2f", True),
    ("device_cpu_overhead_s", "  → beyond training alone (s)", "%.2f", False),
    ("device_cpu_outside_training_s", "  → outside the training loop (s)", "%.3f", False),
    ("foreign_load", "other processes during the rounds (cores busy)", "%.2f", False),
]


def median(v):
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2 if v else None


def main():
    raw, out = sys.argv[1], sys.argv[2]
    meta = load(raw, "meta.json")
    if not meta:
        sys.exit(f"flower_report: {raw}/meta.json missing")
    ours_local, fl_local = load(raw, "ours_local.json"), load(raw, "flower_local.json")
    runs = [r for r in (ours_run(raw, ra, meta, ours_local) for ra in meta["retry_after"].split()) if r]
    fl = flower_run(raw, fl_local)
    if not runs or not fl:
        sys.exit("flower_report: a side has no results (see the messages above)")
    par = min(meta["cores"], meta["clients"])
    for r in runs + [fl]:
        if r.get("train_alone_s") is not None:
            r["train_floor_s"] = r["train_alone_s"] / par
            r["overhead_s"] = r["s_per_round"] - r["train_floor_s"]
            if r.get("device_cpu_per_round_s") is not None:
                r["device_cpu_overhead_s"] = r["device_cpu_per_round_s"] - r["train_alone_s"]
        r["median_round_s"] = median(r["round_s"])
    cols = runs + [fl]
    head = ["", *[c["name"] for c in cols], "Flower / Artificien"]
    lines = []
    for key, label, fmt, show in ROWS:
        cells = [fmt % c[key] if c.get(key) is not None else "—" for c in cols]
        a, b = runs[0].get(key), fl.get(key)
        ratio = "%.2f×" % (b / a) if show and a and b is not None else "—"
        lines.append([label, *cells, ratio])
    v = fl["versions"]
    try:
        with open(os.path.join(raw, "shards_identical")) as f:
            meta["shards_identical"] = f.read().strip() == "true"
    except OSError:
        meta["shards_identical"] = None
    title = (f"{meta['clients']} device processes, {meta['rounds']} rounds, {meta['partition']} "
             f"(seed {meta['seed']}; shards identical on both sides: "
             f"{'yes' if meta['shards_identical'] else 'NO'}), {meta['cores']} cores; flwr {v['flwr']}, grpcio {v['grpcio']}, "
             f"protobuf {v['protobuf']}, torch {v['torch']}, numpy {v['numpy']}, Python {v['python']}; "
             f"load average before each side: "
             + ", ".join(f"{c['name']} {c['load']}" for c in cols))
    width = [max(len(str(row[i])) for row in [head] + lines) for i in range(len(head))]
    print("== Artificien vs Flower: " + title)
    for row in [head] + lines:
        print("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, width))))
    print("(ratio: the Flower column over the first Artificien column; shared machine, noisy: "
          "compare within one run)")
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(x) for x in row) + " |" for row in lines]
    with open(os.path.join(raw, "report.md"), "w") as f:
        f.write(title + "\n\n" + "\n".join(md) + "\n")
    summary = {"config": meta, "artificien": runs, "flower": fl,
               "ratios_flower_over_artificien": {
                   k: (fl[k] / runs[0][k] if runs[0].get(k) and fl.get(k) is not None else None)
                   for k, _, _, show in ROWS if show}}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
