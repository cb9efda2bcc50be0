"""Times the default radial PSD in numpy (Hann window, amplitude, true-DC rings, Nyquist,
min-max) on the same batches as `benches/spectrum.rs` (64 single-channel images, 224 and 64 px)
and prints images/s, and the ratio to the Rust bench when its criterion results exist.

    RAYON_NUM_THREADS=2 cargo bench --bench spectrum      # Rust numbers (target/criterion)
    python3 benches/psd_numpy.py [--target-dir DIR]       # numpy numbers and the ratio

numpy's FFT (pocketfft) is single-threaded; the batch is transformed in one vectorised call
(np.fft.fft2 over the last two axes) and the rings are summed with one np.bincount per batch,
which is the fastest plain-numpy formulation we know. Needs numpy (tested with 2.3.5).
"""

import argparse
import json
import os
import time

import numpy as np

N = 64


def make_plan(side):
    i = np.arange(side)
    w1 = 0.5 - 0.5 * np.cos(2 * np.pi * i / side)
    win = np.outer(w1, w1)
    win /= win.sum()
    y, x = np.indices((side, side))
    # Integer offsets from the DC bin of the shifted spectrum: exact radii.
    ring = np.floor(np.sqrt((y - side // 2) ** 2 + (x - side // 2) ** 2)).astype(np.int64)
    k = side // 2
    counts = np.bincount(ring.ravel(), minlength=k + 1)[1 : k + 1]
    return win, ring.ravel(), counts, k


def psd(batch, plan):
    win, ring, counts, k = plan
    n = batch.shape[0]
    amp = np.abs(np.fft.fftshift(np.fft.fft2(batch * win), axes=(-2, -1))).reshape(n, -1)
    # One bincount for the whole batch: offset every image's rings.
    nr = ring.max() + 1
    idx = (ring[None, :] + nr * np.arange(n)[:, None]).ravel()
    sums = np.bincount(idx, amp.ravel(), minlength=n * nr).reshape(n, nr)
    curves = sums[:, 1 : k + 1] / counts
    lo = curves.min(axis=1, keepdims=True)
    hi = curves.max(axis=1, keepdims=True)
    curves = (curves - lo) / (hi - lo)
    return curves.mean(axis=0), curves.std(axis=0)


def rust_images_per_s(target_dir, side):
    path = os.path.join(target_dir, "criterion", "radial_psd", "default", str(side), "new",
                        "estimates.json")
    try:
        with open(path) as f:
            est = json.load(f)
    except OSError:
        return None
    return N / (est["mean"]["point_estimate"] * 1e-9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", "target"))
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    for side in (224, 64):
        batch = (rng.random((N, side, side), dtype=np.float32) - 0.5).astype(np.float32)
        plan = make_plan(side)
        psd(batch, plan)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            psd(batch, plan)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        ips = N / t
        line = f"{side}x{side}: numpy {ips:,.0f} images/s (median of {args.repeats} batches of {N})"
        rust = rust_images_per_s(args.target_dir, side)
        if rust is not None:
            line += f"; rust {rust:,.0f} images/s; ratio rust/numpy = {rust / ips:.1f}x"
        print(line)


if __name__ == "__main__":
    main()
