"""conftest.py's CI rule: with CI=true a skipped test fails the run.

Each case runs pytest in a subprocess on a tiny test file next to a copy of
this suite's conftest.py, in a temporary folder with no MNIST beside it, so
the real `mnist_dir` fixture skips exactly as it does on a machine without
../shared.
"""

import os
import pathlib
import subprocess
import sys

import pytest

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")
TESTS = """
import pytest

def test_passes():
  pass

def test_needs_mnist(mnist_dir):
  pass
"""


def run_pytest(folder, ci=None, select="test_file.py", options=()):
  (folder / "conftest.py").write_text(CONFTEST.read_text())
  (folder / "test_file.py").write_text(TESTS)
  env = {k: v for k, v in os.environ.items() if k not in ("CI", "MNIST_DIR")}
  if ci is not None:
    env["CI"] = ci
  return subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *options, select],
      cwd=folder, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_skip_fails_the_run_under_ci(tmp_path):
  result = run_pytest(tmp_path, ci="true")
  assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
  assert "1 passed, 1 skipped" in result.stdout
  assert ("skipped: test_file.py::test_needs_mnist: Skipped: real MNIST files not "
          "found" in result.stdout)


@pytest.mark.slow  # three interpreters, each importing JAX
def test_a_skip_on_an_xdist_worker_fails_the_run_under_ci(tmp_path):
  """As `make test-all` runs the suite: the workers' reports reach the rule."""
  result = run_pytest(tmp_path, ci="true", options=("-n", "2"))
  assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
  assert "1 passed, 1 skipped" in result.stdout
  assert "skipped: test_file.py::test_needs_mnist" in result.stdout


def test_a_skip_is_fine_outside_ci(tmp_path):
  result = run_pytest(tmp_path)
  assert result.returncode == pytest.ExitCode.OK, result.stdout
  assert "1 passed, 1 skipped" in result.stdout


def test_a_run_without_skips_passes_under_ci(tmp_path):
  result = run_pytest(tmp_path, ci="true", select="test_file.py::test_passes")
  assert result.returncode == pytest.ExitCode.OK, result.stdout
  assert "1 passed" in result.stdout and "skipped" not in result.stdout
