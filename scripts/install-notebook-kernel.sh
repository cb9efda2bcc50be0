#!/usr/bin/env bash
# Installs what the notebooks need, and nothing when it is already there (idempotent; ~1 s when
# present). Needs only cargo (rustup) and python3 with venv (.ci/run installs python3-venv):
#   1. evcxr_jupyter 0.22.0, the Rust Jupyter kernel (cargo install --locked: ~15 min cold on
#      2 cores; --locked matters, the engine does not build with a fresh resolution);
#   2. a venv with the pinned headless runner packages (nbclient; scripts/notebook-requirements.txt),
#      at $NOTEBOOK_VENV (default target/notebook-venv);
#   3. the `rust` kernelspec (evcxr_jupyter --install), unless one already points at this binary;
#   4. the kernel's shared build folder target/evcxr (lockfile seed, per-crate optimisation).
# For JupyterLab itself: `"$NOTEBOOK_VENV"/bin/pip install jupyterlab`, or conda (environment.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
EVCXR_VERSION=0.22.0
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN:$PATH"
NOTEBOOK_VENV="${NOTEBOOK_VENV:-$PWD/target/notebook-venv}"

if evcxr_jupyter --version 2>/dev/null | grep -q "$EVCXR_VERSION"; then
  echo "evcxr_jupyter $EVCXR_VERSION present: $(command -v evcxr_jupyter)"
else
  echo "installing evcxr_jupyter $EVCXR_VERSION (cargo install --locked; ~15 min cold on 2 cores)"
  t0=$(date +%s)
  # Its own temporary target dir: the project's CARGO_TARGET_DIR would only grow by ~2 GB.
  env -u CARGO_TARGET_DIR cargo install evcxr_jupyter --version "$EVCXR_VERSION" --locked
  echo "evcxr_jupyter installed in $(( $(date +%s) - t0 )) s"
fi

py="$NOTEBOOK_VENV/bin/python"
if [ -x "$py" ] && "$py" -c 'import nbclient, sys; sys.exit(nbclient.__version__ != "0.11.0")' 2>/dev/null; then
  echo "runner venv present: $NOTEBOOK_VENV"
else
  echo "creating runner venv $NOTEBOOK_VENV"
  python3 -m venv "$NOTEBOOK_VENV"
  "$py" -m pip install -q --disable-pip-version-check -r scripts/notebook-requirements.txt
fi

# The kernelspec lives in the user's Jupyter data dir (~/.local/share/jupyter/kernels/rust).
if "$py" - "$(command -v evcxr_jupyter)" <<'PY' 2>/dev/null; then
import sys
from jupyter_client.kernelspec import KernelSpecManager
spec = KernelSpecManager().get_kernel_spec("rust")
sys.exit(0 if spec.argv and spec.argv[0] == sys.argv[1] else 1)
PY
  echo "kernelspec 'rust' present"
else
  evcxr_jupyter --install
fi

"$py" scripts/run_notebooks.py --prepare-only
echo "notebook kernel ready"
