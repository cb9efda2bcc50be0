#!/usr/bin/env bash
# The candle / PyTorch speed comparison of issues 4 and 5 in one run, on this machine:
#   1. candle (examples/speed_table.rs): every workload with the fast CPU path; stock candle too
#      where it finishes in minutes (conv stacks at 64 px, the whole models at 32-64 px);
#   2. PyTorch (scripts/bench_torch.py) on the same workloads, same threads, batch 16;
#   3. peak RSS of one ResNet-50 224 px input-gradient pass at batch 16, each in its own process;
#   4. the Markdown ratio table (candle img/s over PyTorch img/s; > 1: candle faster);
#   5. GFLOP/s of the fast kernels' GEMM backends (OpenBLAS, the gemm crate) and of numpy on the
#      convolutions' product shapes, 1 and THREADS threads;
#   6. the ratio table again from interleaved runs (scripts/speed_interleaved.py): per workload,
#      ROUNDS (default 3) rounds of a candle process and a PyTorch process back to back.
# Usage: scripts/speed-table.sh [OUT_DIR] (default target/speed); THREADS=2 REPS=3 by default.
# Needs a venv with torch: TORCH_VENV (default /work/venv-speed):
#   python3 -m venv "$TORCH_VENV" && "$TORCH_VENV"/bin/pip install torch==2.15.0 numpy==2.3.5
# Takes ~15 min on 2 cores (+ ~15 min for step 6; ROUNDS=0 skips it), mostly ResNet-50 at 224 px;
# run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/speed}"
mkdir -p "$out"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
py="${TORCH_VENV:-/work/venv-speed}/bin/python"
export CARGO_INCREMENTAL=0 RAYON_NUM_THREADS="$THREADS"
cargo build --example speed_table --example gemm_probe
ex=target/debug/examples/speed_table
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== candle, fast path (all workloads)"
"$ex" --mode fast --reps "$REPS" --json "$out/candle-fast.json"
echo "== candle, stock (the workloads it finishes in minutes)"
"$ex" --mode stock --reps "$REPS" --stock-warmup 1 --only _64/ --json "$out/candle-stock-64.json"
"$ex" --mode stock --reps "$REPS" --stock-warmup 1 --only s4_32 --json "$out/candle-stock-s4.json"
echo "== candle, fast convolutions with candle-nn's BatchNorm (SPECTRAL_FAST_BN=0): the fused BN's share"
SPECTRAL_FAST_BN=0 "$ex" --mode fast --reps "$REPS" --only model/s4_32 --json "$out/candle-nobn-s4.json"
SPECTRAL_FAST_BN=0 "$ex" --mode fast --reps "$REPS" --only model/r18_64 --json "$out/candle-nobn-64.json"
"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
merged = {"fast": {}, "stock": {}}
for name in ["candle-fast", "candle-stock-64", "candle-stock-s4"]:
    for mode, table in json.load(open(f"{out}/{name}.json")).items():
        merged[mode].update(table)
json.dump(merged, open(f"{out}/candle.json", "w"), indent=1)
PY

echo "== PyTorch"
"$py" scripts/bench_torch.py --threads "$THREADS" --reps "$REPS" --out "$out/torch.json" > "$out/torch.log"
cat "$out/torch.log"

echo "== peak RSS, ResNet-50 224 px input gradient, batch 16 (one warm-up + one timed pass)"
rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -n 1; }
c_kb=$(rss "$ex" --mode fast --reps 1 --only model/r50_224/dx)
t_kb=$(rss "$py" scripts/bench_torch.py --threads "$THREADS" --reps 1 --only model/r50_224/dx)
echo "candle: $((c_kb / 1024)) MiB   PyTorch: $((t_kb / 1024)) MiB" | tee "$out/peak-rss.txt"

echo "== fused BatchNorm: img/s with candle-nn's BatchNorm -> with the fused one (fast convolutions both)"
"$py" - "$out" <<'PY' | tee "$out/batch-norm.md"
import json, sys
out = sys.argv[1]
fast = json.load(open(f"{out}/candle.json"))["fast"]
nobn = {}
for name in ["candle-nobn-s4", "candle-nobn-64"]:
    nobn.update(json.load(open(f"{out}/{name}.json"))["fast"])
print("| workload | candle-nn BN img/s | fused BN img/s | speed-up |\n|---|---|---|---|")
for k, t in sorted(nobn.items()):
    print(f"| {k} | {16 / t:.1f} | {16 / fast[k]:.1f} | {t / fast[k]:.2f}x |")
PY

echo "== table"
"$py" scripts/bench_torch.py --threads "$THREADS" --reps "$REPS" --from "$out/torch.json" --candle "$out/candle.json" \
  | tee "$out/table.md"

echo "== GEMM backends (examples/gemm_probe.rs) and numpy (scripts/gemm_probe.py)"
{
  target/debug/examples/gemm_probe 1
  target/debug/examples/gemm_probe "$THREADS" | tail -n +3
  OPENBLAS_NUM_THREADS=1 "$py" scripts/gemm_probe.py
  OPENBLAS_NUM_THREADS="$THREADS" "$py" scripts/gemm_probe.py
} | tee "$out/gemm.md"

# The ratios again, each from candle and PyTorch timed back to back (ROUNDS rounds per workload):
# the table above times all of candle, then all of PyTorch, minutes apart, which a drifting VM
# turns into ratios off by up to 2x (docs/performance.md, stops 13-14). ROUNDS=0 skips (~15 min).
ROUNDS="${ROUNDS:-3}"
if [ "$ROUNDS" -gt 0 ]; then
  echo "== interleaved ratio table (scripts/speed_interleaved.py, $ROUNDS rounds)"
  "$py" scripts/speed_interleaved.py --rounds "$ROUNDS" --threads "$THREADS" \
    --out "$out/interleaved.json" | tee "$out/interleaved.md"
fi
