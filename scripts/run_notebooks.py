#!/usr/bin/env python3
"""Execute Jupyter notebooks headlessly on the evcxr Rust kernel and fail honestly.

Why not `jupyter nbconvert --execute`: evcxr reports a panic, or an error returned with `?`, as a
*successful* cell whose only trace is text on stderr, so nbconvert (and papermill) stay green.
This runner executes cell by cell with nbclient, then reads every cell's outputs and fails the
notebook on

- an `error` output (compile errors, bad `:dep` lines, panics when `preserve_vars_on_panic =
  false`), or a cell whose execute reply is not "ok";
- any text on stderr, except evcxr's own harmless notes (ALLOWED_STDERR below);
- a cell that runs past the per-cell timeout, or a kernel that dies.

It stops a notebook at its first failing cell (later cells depend on earlier ones), writes the
executed copy to the output folder (default `target/notebooks-executed/`), prints one line per
notebook, and closes with `N passed, N failed`. The exit status is non-zero on any failure.

Output policy (notebooks/README.md): the committed notebooks carry no outputs. The runner checks
that, so a notebook committed with (stale) outputs fails the run; `--strip` strips in place.

Build cache: evcxr reads `evcxr.toml` from the notebook's folder; the one in `notebooks/` puts the
kernel's build directory at `target/evcxr/kernel`, shared by all notebooks of a run and kept between
runs. `prepare_build_dir` seeds it with the project's Cargo.lock (so evcxr resolves the same
dependency versions as the crate) and a `.cargo/config.toml` that optimises only the crates whose
numeric loops dominate the notebooks' run time (see the comment there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb"))
DEFAULT_OUT = REPO / "target" / "notebooks-executed"
EVCXR_DIR = REPO / "target" / "evcxr"

# evcxr's stderr notes that do not mean the cell failed. Each is a full-line regex.
ALLOWED_STDERR = [
    # a variable whose type was redefined by a later cell is dropped (evcxr_internal_runtime.rs)
    re.compile(r"The type of the variable \S+ was redefined, so was lost\."),
    # blank lines
    re.compile(r"\s*"),
]

# Crates optimised inside the kernel's build although evcxr compiles everything else at the
# notebooks' `opt_level` ("0", so that the cold build of polars, dicom, hf-hub and the rest stays
# short). These carry the numeric work: measured here, candle-core at opt 0 against opt 3 is 21x
# slower on a 3x3 conv2d (1146 vs 55 ms, 32x16x32x32) and 200x on a 256 x 256 matmul (154 vs
# 0.8 ms), so training in notebooks 2, 3 and 5 would crawl. The crate itself holds the FFT, PSD,
# artifact and convolution loops; plotters and the font rasteriser draw the PNG heat maps.
# Generic code is instantiated in (and optimised with) the calling crate, so listing these is
# enough. Each name must be in the dependency graph with one version (cargo warns otherwise).
OPTIMISED_CRATES = [
    "spectral-transfer",
    "candle-core",
    "candle-nn",
    "gemm",
    "gemm-common",
    "gemm-f32",
    "gemm-f64",
    "pulp",
    "rustfft",
    "primal-check",
    "transpose",
    "plotters",
    "plotters-backend",
    "plotters-bitmap",
    "ab_glyph",
    "ab_glyph_rasterizer",
    "fdeflate",
]


def prepare_build_dir(evcxr_dir: Path = EVCXR_DIR) -> None:
    """Create the kernel's shared build dir with a pinned lockfile and per-crate optimisation.

    evcxr writes its own `kernel/.cargo/config.toml` (only `[net] offline`), so ours lives one
    level up, where cargo still finds it (config files are read from every ancestor directory).
    `target/evcxr` is excluded from the workspace in the root Cargo.toml, so cargo does not take
    the kernel's crate for a workspace member.
    """
    kernel = evcxr_dir / "kernel"
    kernel.mkdir(parents=True, exist_ok=True)
    lock = kernel / "Cargo.lock"
    if not lock.exists() and (REPO / "Cargo.lock").exists():
        # Only seeds the first resolution; cargo then adds evcxr's own crate and keeps the pins.
        shutil.copyfile(REPO / "Cargo.lock", lock)
    cfg_dir = evcxr_dir / ".cargo"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by scripts/run_notebooks.py (prepare_build_dir); regenerated on every run.",
        "# evcxr builds every dependency at the notebook's opt_level; these crates carry the",
        "# numeric work, so they are optimised anyway.",
    ]
    for name in OPTIMISED_CRATES:
        lines += [f'[profile.dev.package."{name}"]', "opt-level = 3", ""]
    text = "\n".join(lines)
    cfg = cfg_dir / "config.toml"
    if not cfg.exists() or cfg.read_text() != text:
        cfg.write_text(text)


@dataclass
class CellProblem:
    index: int  # position among all cells (0-based), as Jupyter shows it minus one
    kind: str
    detail: str

    def __str__(self) -> str:
        lines = self.detail.strip().splitlines()
        if len(lines) > 25:  # a panic's backtrace: its head says what happened
            lines = lines[:25] + [f"[... {len(lines) - 25} more lines in the executed copy]"]
        detail = "\n".join(lines)
        return f"cell {self.index + 1}: {self.kind}: {detail}"


@dataclass
class NotebookResult:
    path: Path
    ok: bool = True
    problems: list[CellProblem] = field(default_factory=list)
    seconds: float = 0.0
    cells_run: int = 0
    cells_total: int = 0
    images: int = 0


def stderr_problem(text: str) -> str | None:
    """Return the stderr lines that are not on the allow-list (None when all are allowed)."""
    bad = [
        line
        for line in text.splitlines()
        if not any(p.fullmatch(line) for p in ALLOWED_STDERR)
    ]
    return "\n".join(bad) if bad else None


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def inspect_outputs(index: int, outputs: list) -> list[CellProblem]:
    """Every reason a cell's outputs say it failed (empty when the cell is clean)."""
    problems = []
    # evcxr sends stderr line by line: join the stream into one text, then judge it once
    stderr = "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )
    bad = stderr_problem(strip_ansi(stderr))
    if bad is not None:
        problems.append(CellProblem(index, "stderr", bad))
    for out in outputs:
        kind = out.get("output_type")
        if kind == "error":
            tb = strip_ansi("\n".join(out.get("traceback", [])))
            detail = f"{out.get('ename', '')}: {out.get('evalue', '')}\n{tb}"
            problems.append(CellProblem(index, "error output", detail))
    return problems


def count_images(outputs: list) -> int:
    n = 0
    for out in outputs:
        data = out.get("data", {}) if out.get("output_type") in ("display_data", "execute_result") else {}
        if "image/png" in data or "image/svg+xml" in data:
            n += 1
        elif "<svg" in str(data.get("text/html", "")):
            n += 1
    return n


def has_outputs(nb) -> bool:
    return any(
        c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)
        for c in nb.cells
    )


def strip(nb) -> None:
    for c in nb.cells:
        if c.get("cell_type") == "code":
            c["outputs"] = []
            c["execution_count"] = None
            c.get("metadata", {}).pop("execution", None)


BARRIER = "spectral-transfer-runner-barrier"


def collect_late_stderr(client, n: int, timeout: int) -> str:
    """Stderr text that the cell just run wrote but evcxr forwarded after its execute reply.

    evcxr_jupyter forwards the child process's stderr on a thread of its own, parented to the
    latest execute request (core.rs, `pass_output_line`), and replies to a cell as soon as the
    child reports completion on stdout. A `?` error printed at the end of a cell can therefore
    reach iopub after the reply, parented to the finished cell, where nbclient no longer looks:
    on a loaded CI machine the runner saw such a notebook as passing. The barrier is a second,
    hidden execution that prints a marker on the same stderr pipe; the pipe keeps order, so every
    stream line seen before the marker belongs to the cell before it. Costs one trivial cell
    compile (a fraction of a second) per cell.
    """
    from nbclient.exceptions import DeadKernelError
    from nbclient.util import run_sync

    marker = f"{BARRIER} {n}"
    # Test hook: wait before the barrier, as a slow kernel machine would (tests/notebook_runner).
    delay = float(os.environ.get("SPECTRAL_RUNNER_BARRIER_DELAY_S", "0") or 0)

    async def drain() -> str:
        if delay > 0:
            await asyncio.sleep(delay)
        msg_id = client.kc.execute(f'eprintln!("{marker}");', store_history=False)
        lines: list[str] = []
        seen_marker = idle = False
        deadline = time.monotonic() + timeout
        while not (seen_marker and idle):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadKernelError(f"no reply to the runner's barrier within {timeout} s")
            try:
                msg = await client.kc.iopub_channel.get_msg(timeout=min(left, 5.0))
            except Exception:  # queue.Empty: check that the kernel lives, then wait on
                if not await client.km.is_alive():
                    raise DeadKernelError("kernel died") from None
                continue
            kind = msg["header"]["msg_type"]
            parent = msg.get("parent_header", {}).get("msg_id")
            if kind == "stream":
                for line in msg["content"].get("text", "").splitlines(keepends=True):
                    if line.strip() == marker:
                        seen_marker = True
                    elif not seen_marker and msg["content"].get("name") == "stderr":
                        lines.append(line)
            elif kind == "status" and parent == msg_id and msg["content"].get("execution_state") == "idle":
                idle = True
        return "".join(lines)

    return run_sync(drain)()


def run_notebook(path: Path, out_dir: Path, timeout: int, dep_timeout: int, kernel: str, log) -> NotebookResult:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    res = NotebookResult(path)
    nb = nbformat.read(path, as_version=4)
    if has_outputs(nb):
        res.ok = False
        res.problems.append(
            CellProblem(-1, "committed with outputs", "notebooks are committed stripped; run with --strip")
        )
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    res.cells_total = len(code_cells)
    def cell_timeout(cell) -> int:
        # a `:dep` cell may build the crate and all its dependencies (cold: tens of minutes)
        src = cell.get("source", "")
        return dep_timeout if any(line.lstrip().startswith(":dep") for line in src.splitlines()) else timeout

    client = NotebookClient(
        nb,
        timeout=timeout,
        timeout_func=cell_timeout,
        kernel_name=kernel,
        allow_errors=True,  # we inspect outputs ourselves and stop at the first failing cell
        startup_timeout=120,
        resources={"metadata": {"path": str(path.parent)}},  # evcxr reads evcxr.toml from here
    )
    t0 = time.monotonic()
    try:
        with client.setup_kernel():
            for n, i in enumerate(code_cells, start=1):
                cell = nb.cells[i]
                tc = time.monotonic()
                try:
                    client.execute_cell(cell, i, execution_count=n)
                except CellTimeoutError:
                    res.problems.append(CellProblem(i, "timeout", f"ran past {cell_timeout(cell)} s"))
                    break
                except DeadKernelError as e:
                    res.problems.append(CellProblem(i, "kernel died", str(e)))
                    break
                try:
                    late = collect_late_stderr(client, n, timeout)
                except DeadKernelError as e:
                    res.problems.append(CellProblem(i, "kernel died", str(e)))
                    break
                if late:
                    cell.setdefault("outputs", []).append(
                        nbformat.v4.new_output("stream", name="stderr", text=late)
                    )
                res.cells_run += 1
                problems = inspect_outputs(i, cell.get("outputs", []))
                res.images += count_images(cell.get("outputs", []))
                log(f"    cell {i + 1:>3} {time.monotonic() - tc:6.1f} s" + ("  FAILED" if problems else ""))
                if problems:
                    res.problems.extend(problems)
                    break
    except Exception as e:  # kernel start-up failure and the like: a failed notebook, not a crash
        res.problems.append(CellProblem(-1, "kernel", f"{type(e).__name__}: {e}"))
    res.seconds = time.monotonic() - t0
    if res.problems:
        res.ok = False
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9][0-9]-*.ipynb")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    ap.add_argument(
        "--dep-timeout",
        type=int,
        default=3000,
        help="seconds for a cell with a :dep line (default 3000: cold, it builds the crate and its dependencies)",
    )
    ap.add_argument("--kernel", default="rust", help="kernel name (default: rust, evcxr_jupyter)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the executed copies")
    ap.add_argument("--strip", action="store_true", help="strip outputs of the notebooks in place and exit")
    ap.add_argument("--prepare-only", action="store_true", help="prepare target/evcxr and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-cell lines")
    args = ap.parse_args(argv)

    notebooks = [p.resolve() for p in args.notebooks] or DEFAULT_NOTEBOOKS
    if args.prepare_only:
        prepare_build_dir()
        return 0
    import nbformat

    if args.strip:
        for p in notebooks:
            nb = nbformat.read(p, as_version=4)
            strip(nb)
            nbformat.write(nb, p)
            print(f"stripped {p.relative_to(REPO) if p.is_relative_to(REPO) else p}")
        return 0
    if not notebooks:
        print("no notebooks found", file=sys.stderr)
        return 2
    prepare_build_dir()

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    results = []
    for p in notebooks:
        name = p.relative_to(REPO) if p.is_relative_to(REPO) else p
        print(f"--- {name}", flush=True)
        r = run_notebook(p, args.out, args.timeout, args.dep_timeout, args.kernel, log)
        results.append(r)
        status = "ok" if r.ok else "FAILED"
        print(
            f"{status:6} {name}  {r.seconds:.1f} s, {r.cells_run}/{r.cells_total} code cells, "
            f"{r.images} chart(s); executed copy: {args.out / p.name}",
            flush=True,
        )
        for prob in r.problems:
            print("       " + str(prob).replace("\n", "\n       "), flush=True)
    passed = sum(r.ok for r in results)
    failed = len(results) - passed
    summary = {str(r.path.name): {"ok": r.ok, "seconds": round(r.seconds, 1), "charts": r.images} for r in results}
    (args.out).mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
