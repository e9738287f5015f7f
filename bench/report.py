#!/usr/bin/env python3
"""Prints the side-by-side table of `make bench` from the JSON files in BUILD/bench."""
import json
import os
import sys

out = sys.argv[1]


def load(name):
    p = os.path.join(out, name + ".json")
    try:
        with open(p) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def torch_train(j):
    return j["epochs"][0]["img_per_s"] if j else None


def torch_infer(j):
    return j["inference"]["img_per_s_median"] if j and j.get("inference") else None


rows = []
o1, o2 = load("ours_b100_t1"), load("ours_b100_t2")
s1, s2 = load("ours_b10_t1"), load("ours_b10_t2")
t1, t2, ts = load("torch_b100_t1"), load("torch_b100_t2"), load("torch_b10_t1")
rows.append(("train img/s, batch 100, 1 thread", o1 and o1["train_images_per_sec"], torch_train(t1), 4))
rows.append(("train img/s, batch 100, 2 threads", o2 and o2["train_images_per_sec"], torch_train(t2), None))
rows.append(("train img/s, batch 10, 1 thread", s1 and s1["train_images_per_sec"], torch_train(ts), 5))
rows.append(("train img/s, batch 10, 2 threads", s2 and s2["train_images_per_sec"], None, None))
rows.append(("inference img/s, batch 1000, 1 thread", o1 and o1["infer_images_per_sec"], torch_infer(t1), 4))
rows.append(("inference img/s, batch 1000, 2 threads", o2 and o2["infer_images_per_sec"], torch_infer(t2), None))

print()
print(f"{'measure':42} {'artificien':>12} {'pytorch':>12} {'ratio':>7} {'target':>7}")
for name, ours, peer, target in rows:
    o = f"{ours:12.0f}" if ours else f"{'-':>12}"
    p = f"{peer:12.0f}" if peer else f"{'-':>12}"
    r = f"{ours / peer:6.2f}x" if ours and peer else f"{'-':>7}"
    t = f"{target:>6}x" if target else f"{'':>7}"
    print(f"{name:42} {o} {p} {r} {t}")
if o1:
    print(f"\nSGEMM 512^3 (BLAS, 1 thread): {o1['gemm512_gflops']:.1f} GFLOP/s; training at batch 100 "
          f"runs {o1['train_gflops']:.1f} GFLOP/s = {100 * o1['fraction_of_gemm']:.0f}% of it "
          f"({o1['train_flops_per_image'] / 1e6:.2f} MFLOP per training image)")
if s1 and s2 and o1 and o2:
    print(f"2 threads vs 1: batch 100 {o2['train_images_per_sec'] / o1['train_images_per_sec']:.2f}x, "
          f"batch 10 {s2['train_images_per_sec'] / s1['train_images_per_sec']:.2f}x")
