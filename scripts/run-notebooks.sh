#!/usr/bin/env bash
# Executes the notebook series headlessly on the evcxr kernel (scripts/run_notebooks.py) and fails
# on any failing cell, including panics and `?` errors that evcxr reports as stderr text.
#   scripts/run-notebooks.sh               self-test of the runner, then all six notebooks
#   scripts/run-notebooks.sh --self-test   only the runner's tests (tests/notebook_runner/)
#   scripts/run-notebooks.sh notebooks/01-spectra.ipynb [...]   only these (runner options pass through)
# Executed copies go to target/notebooks-executed/. Run scripts/install-notebook-kernel.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
NOTEBOOK_VENV="${NOTEBOOK_VENV:-$PWD/target/notebook-venv}"
py="$NOTEBOOK_VENV/bin/python"
if [ ! -x "$py" ]; then
  echo "no runner venv at $NOTEBOOK_VENV: run scripts/install-notebook-kernel.sh" >&2
  exit 2
fi
self_test() {
  echo "runner self-test (tests/notebook_runner): a good notebook passes; compile error, panic, ? error fail"
  "$py" -m unittest discover -s tests/notebook_runner -p 'test_*.py' -v
}
if [ "${1:-}" = "--self-test" ]; then
  self_test
  exit
fi
if [ $# -eq 0 ]; then
  self_test
fi
exec "$py" scripts/run_notebooks.py "$@"
