"""The package's layers hold: import-linter's contracts in pyproject.toml."""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
  lint = pathlib.Path(sys.executable).with_name("lint-imports")
  result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")],
                          cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "0 broken" in result.stdout and "KEPT" in result.stdout


def test_a_higher_layer_import_in_core_breaks_the_contract(tmp_path):
  """The contract is not vacuous: core importing the engine is reported."""
  package = tmp_path / "mnist_jax"
  for src in (REPO / "mnist_jax").rglob("*.py"):
    dst = package / src.relative_to(REPO / "mnist_jax")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(src.read_text())
  (package / "core" / "bad.py").write_text("from mnist_jax.engine import loop\n")
  lint = pathlib.Path(sys.executable).with_name("lint-imports")
  result = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")],
                          cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
  assert result.returncode != 0
  assert "mnist_jax.core.bad -> mnist_jax.engine.loop" in result.stdout
