"""A study is one file: a NAME.py that assigns STUDY in the experiments folder is
run by `study NAME`, listed by `study -h` and put in RESULTS.md by make_results;
`--points` and `--seeds` run part of it; its tables say what budget made them."""

import ast
import gc
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from mnist_jax.core import data, run_dir
from mnist_jax.studies import catalog, runner
from helpers import one_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]

# A new study as a user writes it: two MLP widths, no report of its own.
WIDTH_STUDY = '''\
"""Study 6: hidden width of the MLP, 16 against 32 units."""

from mnist_jax.studies.spec import Point, Preset, Study

STUDY = Study("width", [
    Point("w16", "configs/mlp.py", {"model.hidden_features": (16,)}, label="MLP 16"),
    Point("w32", "configs/mlp.py", {"model.hidden_features": (32,)}, label="MLP 32"),
], title="6. Hidden width")
PRESETS = {"cpu": Preset(seeds=range(3), overrides={"num_epochs": 2})}
'''


def study_folder(tmp_path, **files):
  """A folder of study files: width.py, a helper module that declares none,
  and `files` ({name: text})."""
  folder = tmp_path / "experiments"
  folder.mkdir()
  (folder / "width.py").write_text(WIDTH_STUDY)
  (folder / "helpers.py").write_text("STUDIES_SEEN = 0  # not a study\n")
  for name, text in files.items():
    (folder / f"{name}.py").write_text(text)
  return folder


def test_help_lists_the_study_files_of_the_folder(cli_here, tmp_path):
  folder = study_folder(tmp_path)
  result = cli_here("study", "-h", "--experiments_dir", str(folder))
  assert result.returncode == 0
  listing = result.stdout.split(f"studies in {folder}:\n", 1)[1].splitlines()
  assert listing == ["  width  Study 6: hidden width of the MLP, 16 against 32 units."]
  # The checkout's own studies, from its experiments/ folder.
  listed = cli_here("study", "--help").stdout.split("studies in experiments:\n")[1]
  assert [line.split()[0] for line in listed.splitlines()] == [
      "kernel_size", "lecun1998", "mlp_vs_cnn", "robustness", "stride"]


class _ParsesWhenCollected:
  """Garbage whose finalizer parses Python (as 3.11's traceback formatting does
  when an unraisable-exception hook reports a coroutine never awaited) and
  leaves another such cycle behind, so that a collection during any parse finds
  one, until `left` runs out."""
  left = 0

  @classmethod
  def leave_one(cls):
    cycle = cls()
    cycle.itself = cycle

  def __del__(self):
    ast.parse("x = (1 + 2) * 3")
    if _ParsesWhenCollected.left > 0:
      _ParsesWhenCollected.left -= 1
      _ParsesWhenCollected.leave_one()


def test_listing_survives_a_collection_that_parses_during_the_parse(tmp_path):
  folder = study_folder(tmp_path)
  threshold = gc.get_threshold()
  gc.set_threshold(1)  # a collection at nearly every allocation
  _ParsesWhenCollected.left = 10_000
  try:
    _ParsesWhenCollected.leave_one()
    for _ in range(5):
      assert list(catalog.find_studies(str(folder))) == ["width"]
  finally:
    _ParsesWhenCollected.left = 0
    gc.set_threshold(*threshold)
    gc.collect()


def test_a_study_file_must_match_its_name_and_declare_presets(cli_here, tmp_path):
  wrong_name = WIDTH_STUDY.replace('Study("width"', 'Study("widths"')
  no_presets = WIDTH_STUDY.split("PRESETS")[0].replace('Study("width"', 'Study("bare"')
  folder = study_folder(tmp_path, renamed=wrong_name, bare=no_presets)
  for name, fragment in (("renamed", "declares the study 'widths'"),
                         ("bare", "declares no PRESETS"),
                         ("helpers", "use one of bare, renamed, width")):
    result = cli_here("study", name, "--experiments_dir", str(folder))
    one_error_line(result, fragment)


def fake_train(config, workdir, **_):
  """A finished run, in no time: accuracy 0.9 + width / 1000 + seed / 10000."""
  run_dir.write_config(workdir, config)
  metrics = dict.fromkeys(run_dir.METRIC_KEYS, 1.0)
  for epoch in range(1, config.num_epochs + 1):
    metrics.update(epoch=epoch, test_accuracy=0.9 + config.model.hidden_features[0] / 1000
                   + config.seed / 10000)
    run_dir.append_metrics(workdir, metrics)
  return {"test_accuracy": metrics["test_accuracy"]}


@pytest.fixture
def faked_training(monkeypatch):
  monkeypatch.setattr(runner, "train_and_evaluate", fake_train)
  monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: (None, None))


def table_lines(out, name="width"):
  return (out / "tables" / f"{name}.md").read_text().splitlines()


def test_points_and_seeds_run_part_of_a_study(cli_here, tmp_path, faked_training):
  folder, out = study_folder(tmp_path), tmp_path / "runs"
  result = cli_here("study", "width", "--experiments_dir", str(folder), "--out",
                    str(out), "--points", "w32", "--seeds", "2")
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in out.iterdir()) == ["figures", "tables", "train.lock", "w32"]
  assert [p.name for p in (out / "w32").iterdir()] == ["seed_2"]
  rows = [line for line in table_lines(out) if line.startswith("| MLP")]
  assert len(rows) == 1 and rows[0].startswith("| MLP 32 | trained |")
  # The budget line is read from the run's config.json.
  assert ("Budget (the runs' config.json): 2 epochs; 60,000 training images (train); "
          "10,000 test images (test); seed 2; preset cpu.") in table_lines(out)
  for argv, fragment in ((["--points", "w64"], "no point 'w64': use some of w16, w32"),
                         (["--points="], "--points is empty"),
                         (["--seeds", "x"], "--seeds x"), (["--seeds="], "--seeds is empty")):
    result = cli_here("study", "width", "--experiments_dir", str(folder),
                      "--out", str(tmp_path / "other"), *argv)
    one_error_line(result, fragment)


def test_a_quick_table_states_the_quick_budget(cli_here, tmp_path, faked_training):
  folder, out = study_folder(tmp_path), tmp_path / "runs"
  result = cli_here("study", "width", "--experiments_dir", str(folder), "--out",
                    str(out), "--quick")
  assert result.returncode == 0, result.stderr
  budget = [line for line in table_lines(out) if line.startswith("Budget")]
  assert budget == ["Budget (the runs' config.json): 1 epoch; 1,000 training images "
                    "(train[:1000]); 500 test images (test[:500]); seeds 0, 1; "
                    "preset cpu --quick."]
  # The same runs tabulated as the full preset: their configs are not its own.
  result = cli_here("study", "width", "--experiments_dir", str(folder), "--out",
                    str(out), "--tables_only", "--seeds", "0,1")
  assert result.returncode == 0, result.stderr
  budget = [line for line in table_lines(out) if line.startswith("Budget")]
  assert budget == ["Budget (the runs' config.json): 1 epoch; 1,000 training images "
                    "(train[:1000]); 500 test images (test[:500]); seeds 0, 1; "
                    "configs differing from preset cpu's."]


def copy_of_the_checkout(tmp_path):
  """The package, configs and experiments/ copied, with the new study file added."""
  root = tmp_path / "checkout"
  for folder in ("mnist_jax", "configs", "experiments"):
    shutil.copytree(REPO / folder, root / folder,
                    ignore=shutil.ignore_patterns("__pycache__"))
  (root / "experiments" / "width.py").write_text(WIDTH_STUDY)
  return root


def run_in(root, *args):
  """`python ARGS` in the copy, which imports its own package (PYTHONPATH)."""
  env = dict(os.environ, PYTHONPATH=str(root))
  result = subprocess.run([sys.executable, *map(str, args)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow  # three processes, two tiny MLPs trained on real MNIST: ~40 s
@pytest.mark.real_data
def test_a_new_study_file_runs_through_the_cli_and_make_results(tmp_path, mnist_dir):
  root = copy_of_the_checkout(tmp_path)
  listing = run_in(root, "-m", "mnist_jax", "study", "--help").split("studies in ")[1]
  assert "  width        Study 6: hidden width of the MLP" in listing
  out = root / "runs" / "studies" / "width" / "cpu"
  run_in(root, "-m", "mnist_jax", "study", "width", "--quick", "--seeds", "0",
         "--data_dir", mnist_dir, "--out", out)
  assert sorted(p.name for p in out.iterdir()) == [
      "figures", "tables", "train.lock", "w16", "w32"]
  lines = table_lines(out)
  assert [line.split(" | ")[:2] for line in lines if line.startswith("| MLP")] == [
      ["| MLP 16", "trained"], ["| MLP 32", "trained"]]
  assert ("Budget (the runs' config.json): 1 epoch; 1,000 training images (train[:1000]); "
          "500 test images (test[:500]); seed 0; preset cpu --quick.") in lines
  run_in(root, "experiments/make_results.py", "--preset", "cpu")
  results = (root / "RESULTS.md").read_text()
  assert "## 6. Hidden width" in results and "## 7. Accuracy frontier" in results
  section = results.split("## 6. Hidden width")[1].split("## 7.")[0]
  assert "Command: `python experiments/width.py --preset cpu`" in section
  assert "\n".join(lines[:4]) in section  # the study's table, rebuilt by make_results
  assert "## 3. Kernel-size ablation" in results  # the studies not run are listed
