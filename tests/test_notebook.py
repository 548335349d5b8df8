"""notebooks/walkthrough.ipynb: kept without outputs, and runs top to bottom."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def read():
  return nbformat.read(str(NOTEBOOK), as_version=4)


def test_notebook_is_valid_and_kept_without_outputs():
  notebook = read()
  nbformat.validate(notebook)
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert code
  assert all(not c.outputs and c.execution_count is None for c in code)


def tiny_budget(notebook, runs: pathlib.Path):
  """The notebook with its parameters cell replaced by a budget of seconds."""
  [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
  cell.source = "\n".join([
      "NUM_EPOCHS = 1",
      "TRAIN_SPLIT = 'train[:2000]'",
      "TEST_SPLIT = 'test[:500]'",
      f"RUNS = {str(runs)!r}",
      f"DIGITS = {str(REPO / 'examples' / 'digits')!r}",
  ])
  return notebook


@pytest.mark.slow
@pytest.mark.real_data
def test_notebook_runs_top_to_bottom(mnist_dir, tmp_path, monkeypatch):
  from nbclient import NotebookClient
  monkeypatch.setenv("MNIST_DIR", mnist_dir)
  # The kernel imports this checkout's package, whatever the environment installed.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
  notebook = tiny_budget(read(), tmp_path / "runs")
  NotebookClient(notebook, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                    for o in c.outputs)
  assert "mlp" in outputs and "cnn" in outputs and "test accuracy" in outputs
  assert "digit3_300x300.png" in outputs
  assert (tmp_path / "runs" / "cnn" / "metrics.jsonl").exists()
