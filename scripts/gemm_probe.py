"""numpy's float32 `a @ b` (its bundled OpenBLAS) on the shapes of examples/gemm_probe.rs.

    OPENBLAS_NUM_THREADS=1 python3 scripts/gemm_probe.py   # and =2
"""
import os
import time

import numpy as np

SHAPES = [(64, 576, 3136), (128, 1152, 784), (256, 2304, 784), (512, 4608, 784),
          (256, 64, 3136), (64, 256, 3136), (1024, 256, 784)]
threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
for m, k, n in SHAPES:
    a = (np.arange(m * k) % 17).astype(np.float32).reshape(m, k) * 0.01
    b = (np.arange(k * n) % 13).astype(np.float32).reshape(k, n) * 0.01
    flops = 2.0 * m * n * k
    reps = max(3, int(4e9 / flops))
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    secs = (time.perf_counter() - t) / reps
    print(f"| {m} x {k} x {n} | {threads} | numpy {flops / secs / 1e9:.1f} GFLOP/s |")
