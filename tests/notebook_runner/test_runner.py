"""Tests of scripts/run_notebooks.py: it must fail every way a Rust notebook can fail.

Run: scripts/run-notebooks.sh --self-test (or `python -m unittest discover -s tests/notebook_runner`
with the runner venv). The kernel tests execute the tiny notebooks beside this file on the real
evcxr kernel (std only, a few seconds each); they are skipped, with a message, when the `rust`
kernel is not installed (scripts/install-notebook-kernel.sh installs it; CI always has it).
"""

import io
import os
import shutil
import sys
import tempfile
import unittest
from contextlib import redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "scripts"))
import run_notebooks as rn  # noqa: E402


def kernel_installed() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("rust")
        return bool(spec.argv) and shutil.which(spec.argv[0]) is not None
    except Exception:
        return False


class OutputInspection(unittest.TestCase):
    """The output checks alone, on hand-made outputs (no kernel)."""

    def test_error_output_fails(self):
        probs = rn.inspect_outputs(3, [{"output_type": "error", "ename": "Error", "evalue": "E0308", "traceback": []}])
        self.assertEqual([p.kind for p in probs], ["error output"])
        self.assertIn("cell 4", str(probs[0]))

    def test_stderr_fails_unless_allowed(self):
        bad = {"output_type": "stream", "name": "stderr", "text": "Error: invalid digit found in string\n"}
        ok = {"output_type": "stream", "name": "stderr", "text": "The type of the variable w was redefined, so was lost.\n\n"}
        self.assertEqual(len(rn.inspect_outputs(0, [bad])), 1)
        self.assertEqual(rn.inspect_outputs(0, [ok]), [])
        mixed = {"output_type": "stream", "name": "stderr", "text": ok["text"] + bad["text"]}
        probs = rn.inspect_outputs(0, [mixed])
        self.assertEqual(len(probs), 1)
        self.assertNotIn("redefined", probs[0].detail)

    def test_stdout_and_display_pass(self):
        outs = [
            {"output_type": "stream", "name": "stdout", "text": "panic is just a word here\n"},
            {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}},
        ]
        self.assertEqual(rn.inspect_outputs(0, outs), [])
        self.assertEqual(rn.count_images(outs), 1)

    def test_committed_outputs_are_refused(self):
        import nbformat

        nb = nbformat.read(HERE / "good.ipynb", as_version=4)
        self.assertFalse(rn.has_outputs(nb), "the committed test notebook must be stripped")
        nb.cells[1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "stale\n"}]
        self.assertTrue(rn.has_outputs(nb))
        rn.strip(nb)
        self.assertFalse(rn.has_outputs(nb))


@unittest.skipUnless(kernel_installed(), "the `rust` kernel is not installed: run scripts/install-notebook-kernel.sh")
class OnTheKernel(unittest.TestCase):
    """Each tiny notebook through the real runner and the evcxr kernel."""

    def run_runner(self, *names):
        out = tempfile.mkdtemp(prefix="nbrunner-")
        self.addCleanup(shutil.rmtree, out, True)
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = rn.main([str(HERE / n) for n in names] + ["--out", out, "--timeout", "300"])
        text = buf.getvalue()
        sys.stderr.write(text)
        return rc, text, Path(out)

    def assert_fails_at(self, name, cell, kind, needle):
        rc, text, _ = self.run_runner(name)
        self.assertEqual(rc, 1, text)
        self.assertIn("0 passed, 1 failed", text.splitlines()[-1])
        self.assertIn(f"cell {cell}: {kind}", text)
        self.assertIn(needle, text)
        self.assertNotIn("never reached", text.split("--- ")[-1].split("FAILED")[0])

    def test_good_notebook_passes(self):
        rc, text, out = self.run_runner("good.ipynb")
        self.assertEqual(rc, 0, text)
        self.assertEqual(text.splitlines()[-1], "1 passed, 0 failed")
        self.assertIn("1 chart(s)", text)
        self.assertTrue((out / "good.ipynb").exists())

    def test_compile_error_fails(self):
        self.assert_fails_at("compile_error.ipynb", 3, "error output", "mismatched types")

    def test_panic_fails(self):
        self.assert_fails_at("panic.ipynb", 3, "error output", "deliberate panic")

    def test_panic_fails_with_default_config(self):
        # no evcxr.toml in no-config/: the panic is only stderr text, which the runner reads
        self.assert_fails_at("no-config/panic.ipynb", 2, "", "deliberate panic")

    def test_question_mark_error_fails(self):
        self.assert_fails_at("question_mark.ipynb", 3, "stderr", "invalid digit")

    def test_late_stderr_fails(self):
        # Written 100 ms after the cell's execute reply, in the notebook's last cell: only the
        # barrier sees it. The runner waits 1 s before its barrier here, as on a slow machine,
        # so that the late line is written before the marker (without the barrier this notebook
        # passes: checked by hand).
        os.environ["SPECTRAL_RUNNER_BARRIER_DELAY_S"] = "1.0"
        self.addCleanup(os.environ.pop, "SPECTRAL_RUNNER_BARRIER_DELAY_S", None)
        self.assert_fails_at("late_stderr.ipynb", 3, "stderr", "late failure")

    def test_closing_line_counts_all(self):
        rc, text, _ = self.run_runner("good.ipynb", "question_mark.ipynb")
        self.assertEqual(rc, 1)
        self.assertEqual(text.splitlines()[-1], "1 passed, 1 failed")


if __name__ == "__main__":
    unittest.main()
