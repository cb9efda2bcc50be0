#!/usr/bin/env python3
"""The candle / PyTorch ratio table from interleaved runs (issue 5).

`scripts/speed-table.sh` times every candle workload, then every PyTorch one: on a VM whose
speed drifts (up to 2x within an hour on this project's machines, docs/performance.md stops 13
and 14) the two halves of a ratio can come from different machine states. Here each workload
is timed in ROUNDS rounds of (candle process, PyTorch process), back to back, and each round
gives one ratio; the table reports the median ratio and its range, with each side's median
img/s. Ratio > 1: candle faster.

Usage (the torch venv's python; the candle example built first, as speed-table.sh does):
    RAYON_NUM_THREADS=2 $TORCH_VENV/bin/python scripts/speed_interleaved.py \
        --rounds 3 --reps 1 --reps-small 5 --out target/speed/interleaved.json [--only conv/r18_64]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import BATCH, WORKLOADS, cpu_info, wanted  # noqa: E402

CANDLE = "target/debug/examples/speed_table"


def candle_secs(name, reps, tmp):
    out = os.path.join(tmp, "c.json")
    subprocess.run([CANDLE, "--mode", "fast", "--reps", str(reps), "--only", name + "$", "--json", out],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)["fast"][name]


def torch_secs(name, reps, threads, tmp):
    out = os.path.join(tmp, "t.json")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch.py")
    subprocess.run([sys.executable, script, "--threads", str(threads), "--reps", str(reps), "--only", name + "$",
                    "--out", out], check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)["seconds"][name]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1, help="timed iterations per process, after one warm-up")
    ap.add_argument("--reps-small", type=int, default=5, help="the same for the 32 and 64 px workloads (ms each)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("RAYON_NUM_THREADS", "2")))
    ap.add_argument("--only", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [w for w in WORKLOADS if wanted(a.only, w)]:
            c, t = [], []
            reps = a.reps_small if ("_64/" in name or "_32/" in name) else a.reps
            for _ in range(a.rounds):
                c.append(candle_secs(name, reps, tmp))
                t.append(torch_secs(name, reps, a.threads, tmp))
            ratios = [ti / ci for ci, ti in zip(c, t)]
            rows[name] = {"candle_s": c, "torch_s": t, "ratio": ratios}
            print(f"{name:22s} ratios {' '.join(f'{r:.2f}' for r in ratios)}", file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        json.dump({"cpu": cpu_info(), "threads": a.threads, "batch": BATCH, "rounds": a.rounds, "reps": a.reps,
                   "reps_small": a.reps_small,
                   "workloads": rows}, f, indent=1)
    print(f"\nCPU: {cpu_info()}; {a.threads} threads; batch {BATCH}; {a.rounds} interleaved rounds of "
          f"(candle, PyTorch); per process a warm-up, then the median of {a.reps_small} (32-64 px) or "
          f"{a.reps} (224 px) timed iterations\n")
    print("| workload | candle fast img/s | PyTorch img/s | fast / PyTorch (median) | range |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        ips = lambda s: BATCH / statistics.median(s)
        print(f"| {name} | {ips(r['candle_s']):.1f} | {ips(r['torch_s']):.1f} | "
              f"{statistics.median(r['ratio']):.2f} | {min(r['ratio']):.2f}-{max(r['ratio']):.2f} |")


if __name__ == "__main__":
    main()
