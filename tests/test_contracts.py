"""The 'no JAX' import contract (pyproject.toml) is not vacuous: a study's
statistics module that imports JAX, directly or through a module it imports,
is reported by lint-imports."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONTRACT = "A study's spec, its statistics and table formatting never import JAX"


def lint_copy_with(tmp_path, module: str, line: str):
  """lint-imports on a copy of the package whose `module` (a path under
  mnist_jax/) has `line` appended."""
  package = tmp_path / "mnist_jax"
  shutil.copytree(REPO / "mnist_jax", package, ignore=shutil.ignore_patterns("__pycache__"))
  with open(package / module, "a") as f:
    f.write(f"\n{line}\n")
  lint = pathlib.Path(sys.executable).with_name("lint-imports")
  return subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")],
                        cwd=tmp_path, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(tmp_path)))


@pytest.mark.parametrize("module,line,chain", [
    ("studies/stats.py", "import jax", "mnist_jax.studies.stats -> jax"),
    # Indirectly: the spec importing a core module that imports flax.
    ("studies/spec.py", "from mnist_jax.core import models", "mnist_jax.studies.spec -> "
     "mnist_jax.core.models"),
])
def test_a_jax_import_in_a_study_spec_or_its_statistics_breaks_the_contract(
    tmp_path, module, line, chain):
  result = lint_copy_with(tmp_path, module, line)
  assert result.returncode != 0, result.stdout[-3000:]
  assert f"{CONTRACT} BROKEN" in result.stdout, result.stdout[-3000:]
  assert chain in result.stdout, result.stdout[-3000:]
