#!/usr/bin/env python3
"""Plain-PyTorch SCAFFOLD (Karimireddy et al. 2020, option II) or FedAvg on Fashion-MNIST.

An independent reference for `artificien sim --strategy scaffold`, written from the paper,
not from our code, to tell an implementation bug from the algorithm's own behaviour
(docs/simulation.md, "SCAFFOLD"). Single process, CPU, 1 thread.

Partition shards:2 (sort the first --limit training images by label, cut 2K shards, two
random shards per client). Each round: sample round(frac*K) clients; each runs one local
epoch of plain SGD in batches of --batch with the gradient corrected by c - c_i; then
  c_i+ = c_i - c + (x - y_i) / (steps * lr)         (option II)
  x   += sum_k (n_k / n) (y_k - x)                   (sample-weighted, eta_g = 1)
  c   += (1/K) sum_k (c_i+ - c_i)
Prints the test accuracy and loss per round.

  python3 bench/peers/torch_scaffold.py --algo scaffold --clients 20 --frac 1 --limit 12000
"""
import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", choices=["scaffold", "fedavg"], default="scaffold")
    ap.add_argument("--clients", type=int, default=20, help="K")
    ap.add_argument("--frac", type=float, default=1.0, help="fraction of clients per round")
    ap.add_argument("--limit", type=int, default=12000, help="first N training images")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    common.pin_threads(1)
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    xtr, ytr, xte, yte = common.load_fmnist()
    xtr, ytr = xtr[:a.limit], ytr[:a.limit]
    rng = np.random.default_rng(a.seed)
    order = np.argsort(ytr, kind="stable")
    shards = np.array_split(order, 2 * a.clients)
    perm = rng.permutation(2 * a.clients)
    parts = [np.concatenate([shards[perm[2 * i]], shards[perm[2 * i + 1]]]) for i in range(a.clients)]
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    Xte, Yte = torch.from_numpy(xte), torch.from_numpy(yte)
    g = common.make_network(torch)()

    def flat(m):
        return torch.cat([p.data.reshape(-1) for p in m.parameters()])

    def setflat(m, v):
        o = 0
        for p in m.parameters():
            p.data.copy_(v[o:o + p.numel()].view_as(p))
            o += p.numel()

    n = flat(g).numel()
    c = torch.zeros(n)
    ci = [torch.zeros(n) for _ in range(a.clients)]
    m = max(1, round(a.frac * a.clients))
    for r in range(1, a.rounds + 1):
        x0 = flat(g).clone()
        dys, dcs, ws = [], [], []
        for k in rng.choice(a.clients, m, replace=False):
            loc = copy.deepcopy(g)
            idx = parts[k]
            corr = c - ci[k] if a.algo == "scaffold" else None
            p = rng.permutation(len(idx))
            steps = 0
            for s in range(0, len(idx), a.batch):
                b = idx[p[s:s + a.batch]]
                loc.zero_grad()
                F.cross_entropy(loc(X[b]), Y[b]).backward()
                with torch.no_grad():
                    o = 0
                    for prm in loc.parameters():
                        gr = prm.grad.reshape(-1)
                        if corr is not None:
                            gr = gr + corr[o:o + prm.numel()]  # g + c - c_i
                        prm.data -= a.lr * gr.view_as(prm)
                        o += prm.numel()
                steps += 1
            y = flat(loc)
            dys.append(y - x0)
            ws.append(len(idx))
            if a.algo == "scaffold":
                cnew = ci[k] - c + (x0 - y) / (steps * a.lr)
                dcs.append(cnew - ci[k])
                ci[k] = cnew
        total = float(sum(ws))
        setflat(g, x0 + sum(w / total * d for w, d in zip(ws, dys)))
        if a.algo == "scaffold":
            c = c + sum(dcs) / a.clients
        acc, loss, _ = common.evaluate(torch, g, Xte, Yte)
        print(f"round {r}: test_acc={acc:.4f} test_loss={loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
