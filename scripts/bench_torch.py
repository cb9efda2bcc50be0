#!/usr/bin/env python3
"""PyTorch side of the CPU speed comparison (issue 5), and the candle/PyTorch ratio table.

Times, with `torch.set_num_threads(THREADS)` (default 2) and batch 16, the same workloads as
`examples/speed_table.rs`:

* conv stacks: every convolution of ResNet-18 / ResNet-50 (torchvision layout) at 64 or 224 px,
  each run on its own random input (forward; forward + input gradient; forward + input and
  weight gradient), summed over the layers: `conv/<net>_<px>/<pass>`;
* whole models (torchvision-style ResNet written out below, 2 classes, 3 channels):
  `model/<net>_<px>/{fwd,dx,train}` (eval forward; eval forward + input gradient of the summed
  log-softmax at the label; train-mode step with cross-entropy and AdamW); `s4_32` is the
  embedded study's own network (ResNet-18, base width 4, 1 channel, small-input stem, 32 px).

Prints img/s (median of --reps runs after a warm-up) and, if a candle JSON from
`cargo run --release --example speed_table -- --json FILE` is given with --candle, the
candle-stock / candle-fast / PyTorch table in Markdown.

Usage (venv: python3 -m venv /work/venv-speed && pip install torch==2.15.0 numpy==2.3.5):
    /work/venv-speed/bin/python scripts/bench_torch.py --candle /tmp/candle.json --out /tmp/torch.json
"""

import argparse
import json
import platform
import statistics
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 16


# ---- conv shapes: keep in step with conv_shapes() in examples/speed_table.rs ----------------
def out_size(h, k, s, p):
    return (h + 2 * p - k) // s + 1


def conv_shapes(net, px):
    """(c_in, c_out, k, stride, pad, h_in) of every convolution of the net at px input."""
    convs = [(3, 64, 7, 2, 3, px)]
    h = out_size(px, 7, 2, 3)
    h = out_size(h, 3, 2, 1)  # max pool 3/2/1
    c = 64
    if net == "r18":
        for stage, width in enumerate([64, 128, 256, 512]):
            for b in range(2):
                s = 2 if (stage > 0 and b == 0) else 1
                convs.append((c, width, 3, s, 1, h))
                ho = out_size(h, 3, s, 1)
                convs.append((width, width, 3, 1, 1, ho))
                if s != 1 or c != width:
                    convs.append((c, width, 1, s, 0, h))
                c, h = width, ho
    else:
        for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
            for b in range(blocks):
                s = 2 if (stage > 0 and b == 0) else 1
                convs.append((c, width, 1, 1, 0, h))
                convs.append((width, width, 3, s, 1, h))
                ho = out_size(h, 3, s, 1)
                convs.append((width, width * 4, 1, 1, 0, ho))
                if s != 1 or c != width * 4:
                    convs.append((c, width * 4, 1, s, 0, h))
                c, h = width * 4, ho
    return convs


# ---- torchvision-style ResNet ------------------------------------------------------------------
class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, w, s):
        super().__init__()
        self.c1 = nn.Conv2d(cin, w, 3, s, 1, bias=False)
        self.b1 = nn.BatchNorm2d(w)
        self.c2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(w)
        self.down = None
        if s != 1 or cin != w:
            self.down = nn.Sequential(nn.Conv2d(cin, w, 1, s, bias=False), nn.BatchNorm2d(w))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, w, s):
        super().__init__()
        self.c1 = nn.Conv2d(cin, w, 1, bias=False)
        self.b1 = nn.BatchNorm2d(w)
        self.c2 = nn.Conv2d(w, w, 3, s, 1, bias=False)
        self.b2 = nn.BatchNorm2d(w)
        self.c3 = nn.Conv2d(w, 4 * w, 1, bias=False)
        self.b3 = nn.BatchNorm2d(4 * w)
        self.down = None
        if s != 1 or cin != 4 * w:
            self.down = nn.Sequential(nn.Conv2d(cin, 4 * w, 1, s, bias=False), nn.BatchNorm2d(4 * w))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """torchvision's ResNet-18/50; `width`, `cin` and `small` (3x3 stride-1 stem, no max-pool: the
    study's narrow model, model::ResNetConfig::small_input) cover the embedded study's network."""

    def __init__(self, net, classes=2, width=64, cin=3, small=False):
        super().__init__()
        block, layers = (Basic, [2, 2, 2, 2]) if net in ("r18", "s4") else (Bottleneck, [3, 4, 6, 3])
        if small:
            self.stem = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(cin, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            )
        mods, c = [], width
        for stage, (w, n) in enumerate(zip([width, 2 * width, 4 * width, 8 * width], layers)):
            for b in range(n):
                mods.append(block(c, w, 2 if (stage > 0 and b == 0) else 1))
                c = w * block.expansion
        self.body = nn.Sequential(*mods)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def build_model(net):
    """`r18`, `r50`: torchvision; `s4`: the embedded study's ResNet-18 (width 4, 1 channel, small stem)."""
    if net == "s4":
        return ResNet("r18", width=4, cin=1, small=True), 1
    return ResNet(net), 3


# ---- workloads -----------------------------------------------------------------------------------
def conv_workload(net, px, kind):
    g = torch.Generator().manual_seed(0)
    layers = []
    for cin, cout, k, s, p, h in conv_shapes(net, px):
        x = torch.randn(BATCH, cin, h, h, generator=g)
        w = (torch.randn(cout, cin, k, k, generator=g) * 0.05).requires_grad_(kind == "dxdw")
        ho = out_size(h, k, s, p)
        up = torch.randn(BATCH, cout, ho, ho, generator=g)
        if kind != "fwd":
            x.requires_grad_(True)
        layers.append((x, w, s, p, up))

    def run():
        for x, w, s, p, up in layers:
            if kind == "fwd":
                with torch.no_grad():
                    F.conv2d(x, w, None, s, p)
            else:
                y = F.conv2d(x, w, None, s, p)
                inputs = (x, w) if kind == "dxdw" else (x,)
                torch.autograd.grad(y, inputs, grad_outputs=up)

    return run


def model_workload(net, px, kind):
    torch.manual_seed(0)
    model, cin = build_model(net)
    x = torch.randn(BATCH, cin, px, px)
    labels = torch.randint(0, 2, (BATCH,))
    if kind == "fwd":
        model.eval()

        def run():
            with torch.no_grad():
                model(x)

    elif kind == "dx":
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)

        def run():
            xi = x.clone().requires_grad_(True)
            out = F.log_softmax(model(xi), dim=1).gather(1, labels[:, None]).sum()
            torch.autograd.grad(out, xi)

    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            opt.step()

    return run


def time_it(run, reps):
    run()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


WORKLOADS = [
    *[f"conv/{n}/{k}" for n in ["r18_64", "r18_224", "r50_224"] for k in ["fwd", "dx", "dxdw"]],
    "model/r18_64/fwd",
    "model/r18_64/dx",
    "model/r18_64/train",
    "model/r18_224/fwd",
    "model/r18_224/dx",
    "model/r50_224/dx",
    "model/r50_224/train",
    "model/s4_32/fwd",
    "model/s4_32/dx",
    "model/s4_32/train",
]


def cpu_info():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return platform.processor()
    model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in out.splitlines() if l.startswith("Flags")), [])
    simd = [f for f in ["avx2", "fma", "avx512f"] if f in flags]
    return f"{model} ({', '.join(simd) or 'no AVX2'})"


def wanted(only, name):
    """--only: a substring of the workload's name, or with a trailing $ the whole name."""
    return name == only[:-1] if only.endswith("$") else only in name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="", help="substring filter on workload names; NAME$: that one alone")
    ap.add_argument("--candle", help="JSON from examples/speed_table.rs")
    ap.add_argument("--out", help="write PyTorch seconds/iteration as JSON")
    ap.add_argument("--from", dest="from_", help="PyTorch JSON from an earlier --out: print the table, time nothing")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {}
    if a.from_:
        with open(a.from_) as f:
            saved = json.load(f)
        res = {k: v for k, v in saved["seconds"].items() if wanted(a.only, k)}
    for name in [] if a.from_ else WORKLOADS:
        if not wanted(a.only, name):
            continue
        scope, nets, kind = name.split("/")
        net, px = nets.split("_")
        make = conv_workload if scope == "conv" else model_workload
        res[name] = time_it(make(net, int(px), kind), a.reps)
        print(f"{name:24s} {res[name]:8.4f} s/it  {BATCH / res[name]:8.1f} img/s", flush=True)
    info = {"cpu": cpu_info(), "torch": torch.__version__, "threads": a.threads, "batch": BATCH, "seconds": res}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(info, f, indent=1)
    if a.candle:
        with open(a.candle) as f:
            cj = json.load(f)
        print(f"\nCPU: {info['cpu']}; torch {torch.__version__}; {a.threads} threads; batch {BATCH}; medians of {a.reps} (as timed)\n")
        print("| workload | candle stock img/s | candle fast img/s | PyTorch img/s | stock / PyTorch | fast / PyTorch |")
        print("|---|---|---|---|---|---|")
        for name, t in res.items():
            st = cj.get("stock", {}).get(name)
            fa = cj.get("fast", {}).get(name)
            ips = lambda s: f"{BATCH / s:.1f}" if s else "-"
            rat = lambda s: f"{t / s:.2f}" if s else "-"
            print(f"| {name} | {ips(st)} | {ips(fa)} | {BATCH / t:.1f} | {rat(st)} | {rat(fa)} |")


if __name__ == "__main__":
    main()
