"""Promised behaviours end to end, each on a tiny budget: `evaluate` prints
the run's own final metrics; the example digits are read as their labels;
every study and the frontier train, tabulate and feed make_results; LeNet-5
learns; `benchmark --fixed_costs` and `speedrun --group` run; TensorBoard
shows the validation metrics."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re

import numpy as np
import pytest

from robust_support import run_cli
from mnist_jax.core import config as config_lib
from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.engine.loop import train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


def mnist_jax_command(*args, timeout=900):
  """`python -m mnist_jax ARGS` in a fresh process, as a user runs it."""
  result = run_cli(*args, timeout=timeout)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def write_config(path, name, **fields):
  """A config file: configs/NAME.py's get_config() with dotted `fields` set."""
  lines = [f"from configs import {name} as base", "", "def get_config():",
           "  config = base.get_config()"]
  lines += [f"  config.{key} = {value!r}" for key, value in fields.items()]
  path.write_text("\n".join(lines + ["  return config", ""]))
  return path


# ---------------------------------------------------------------- evaluate, predict

@pytest.mark.slow
@pytest.mark.real_data
def test_evaluate_prints_the_runs_own_final_metrics(cnn_run, tfds_dir):
  printed = mnist_jax_command("evaluate", "--workdir", cnn_run)
  found = re.search(r"test loss ([\d.]+)  test accuracy ([\d.]+) \((\d+) images\)", printed)
  assert found, printed
  final = run_dir.read_metrics(cnn_run)[-1]
  assert float(found.group(1)) == pytest.approx(final["test_loss"], abs=1e-4)
  assert float(found.group(2)) == pytest.approx(final["test_accuracy"], abs=1e-4)
  assert int(found.group(3)) == final["test_count"]


@pytest.fixture(scope="session")
def good_cnn_run(real_mnist, tmp_path_factory):
  """A small CNN after 2 epochs on the whole of MNIST's training set (about 96%)."""
  from configs import cnn as cnn_config
  config = cnn_config.get_config()
  config.model.update(features=(8, 16, 16), dense_features=(64,))
  config.num_epochs = 2
  workdir = str(tmp_path_factory.mktemp("runs") / "good_cnn")
  train_and_evaluate(config, workdir, data=real_mnist, verbose=False)
  return workdir


@pytest.mark.slow
@pytest.mark.real_data
def test_the_example_digits_are_read_as_their_labels(good_cnn_run):
  printed = mnist_jax_command("predict", "--workdir", good_cnn_run, DIGITS, "--json")
  results = json.loads(printed)
  labels = {r["path"]: int(re.match(r"digit(\d)_", pathlib.Path(r["path"]).name).group(1))
            for r in results}
  assert len(results) == 10 and sorted(labels.values()) == list(range(10))
  assert {r["path"]: r["digit"] for r in results} == labels


# ---------------------------------------------------------------- studies, frontier

# Two points of each study (LeNet-5 among them), in the study's --quick form.
STUDY_POINTS = {"mlp_vs_cnn": ("mlp", "cnn_local"), "robustness": ("cnn",),
                "kernel_size": ("cnn_k1", "cnn_k7"), "stride": ("cnn_s1_pool", "cnn_s3_nopool"),
                "lecun1998": ("linear", "lenet5")}


@pytest.fixture(scope="module")
def studies_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("studies")


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(STUDY_POINTS))
def test_each_study_trains_and_writes_tables_and_figures(name, studies_dir, mnist_dir):
  from mnist_jax.cli.experiments import load_experiment
  from mnist_jax.studies import script
  from mnist_jax.studies.spec import Study
  module = load_experiment(name)
  points = [p for p in module.STUDY.points if p.name in STUDY_POINTS[name]]
  out = studies_dir / name / "cpu"
  script.run(Study(name, points), module.PRESETS, module.report, quick=True, out=str(out),
             mnist_dir=mnist_dir, after_run_for=getattr(module, "after_run_for", None))
  for point in points:
    for seed in (0, 1):
      lines = run_dir.read_metrics(str(out / point.name / f"seed_{seed}"))
      assert [m["epoch"] for m in lines] == [1] and lines[0]["test_count"] == 500
  tables = sorted((out / "tables").glob("*.csv"))
  assert tables and list((out / "figures").glob("*.png"))
  main = list(csv.DictReader((out / "tables" / f"{name}.csv").open()))
  assert len(main) == len(points)  # one row per point, each trained
  assert all(row.get("status", "trained") == "trained" for row in main), main
  for table in tables:
    rows = list(csv.DictReader(table.open()))
    assert rows, table.name
    seeds = {row[key] for row in rows for key in row if key == "seeds"}
    assert seeds <= {"2"}, (table.name, seeds)  # each point's two quick seeds


@pytest.mark.slow
@pytest.mark.real_data
def test_lenet5_learns(real_mnist, tmp_path):
  config = config_lib.load_config_file("configs/lenet5.py")
  config.num_epochs = 2
  train, test = real_mnist
  small = (data_lib.Split(train.images[:5000], train.labels[:5000]),
           data_lib.Split(test.images[:1000], test.labels[:1000]))
  train_and_evaluate(config, str(tmp_path / "lenet5"), data=small, verbose=False)
  lines = run_dir.read_metrics(str(tmp_path / "lenet5"))
  assert lines[-1]["test_accuracy"] > 0.8, lines[-1]
  assert lines[-1]["train_loss"] < lines[0]["train_loss"]


@pytest.fixture(scope="module")
def frontier_dir(tmp_path_factory, mnist_dir, monkeypatch_module):
  """A 'cpu' recipe of two tiny members, trained by experiments/frontier.py."""
  from mnist_jax.cli.experiments import load_experiment
  frontier = load_experiment("frontier")
  root = tmp_path_factory.mktemp("frontier")
  config = write_config(root / "tiny.py", "frontier_cpu", **{
      "model.features": (4, 4, 8, 8, 8), "model.dense_features": (16,), "num_epochs": 1,
      "optimizer.warmup_epochs": 0.0,
      "data.train_split": "train[:1000]", "data.test_split": "test[:500]",
      "data.validation_size": 200})
  members = [frontier.Member(f"seed_{s}", str(config), s) for s in (0, 1)]
  monkeypatch_module.setitem(frontier.RECIPES, "cpu", members)
  monkeypatch_module.syspath_prepend(str(REPO))
  frontier.run("cpu", out=str(root / "cpu"), mnist_dir=mnist_dir)
  return root


@pytest.fixture(scope="module")
def monkeypatch_module():
  with pytest.MonkeyPatch.context() as patch:
    yield patch


@pytest.mark.slow
@pytest.mark.real_data
def test_the_frontier_trains_its_members_and_tabulates_their_ensemble(frontier_dir):
  table = (frontier_dir / "cpu" / "tables" / "frontier.md").read_text()
  for row in ("seed 0", "seed 1", "single model, mean ± std (n=2)",
              "ensemble of 2, averaged probabilities", "ensemble of 2, majority vote",
              "An et al. 2020"):
    assert row in table, row
  ensemble = json.loads((frontier_dir / "cpu" / "ensemble.json").read_text())
  assert ensemble["count"] == 500 and len(ensemble["members"]) == 2
  for member in ensemble["members"]:  # each member scored as its run reported it
    final = run_dir.read_metrics(member["workdir"])[-1]
    assert member["finished"] and member["accuracy"] == pytest.approx(final["test_accuracy"])


@pytest.mark.slow
@pytest.mark.real_data
def test_make_results_reads_the_studies_and_the_frontier(studies_dir, frontier_dir, tmp_path,
                                                         monkeypatch):
  """make_results' sections (RESULTS.md's text) from the runs above; its
  main() is left out as it writes RESULTS.md and docs/figures/ in the checkout."""
  monkeypatch.syspath_prepend(str(REPO))
  from experiments import make_results
  for name in STUDY_POINTS:
    section = make_results.study_section(name, "cpu", str(studies_dir / name / "cpu"),
                                         str(tmp_path))
    assert section.startswith(f"## {make_results.title(name)}")
    assert "Not run yet" not in section and "| " in section, section[:500]
    assert re.search(r"runs finished \d{4}-\d\d-\d\d", section)
  assert len(list(tmp_path.glob("*.png"))) >= len(STUDY_POINTS)  # the figures, copied
  frontier = make_results.frontier_section(str(frontier_dir))
  assert "ensemble of 2, majority vote" in frontier
  assert "Not run yet: it needs a GPU or TPU" in frontier  # the `full` recipe


# ---------------------------------------------------------------- the measuring tools

@pytest.mark.slow
@pytest.mark.real_data
def test_benchmark_fixed_costs_times_each_command_of_a_tiny_config(tmp_path):
  config = write_config(tmp_path / "tiny_mlp.py", "mlp", **{
      "model.hidden_features": (8,), "data.train_split": "train[:1000]",
      "data.test_split": "test[:500]"})
  out = tmp_path / "fixed.csv"
  mnist_jax_command("benchmark", "--fixed_costs", f"here={REPO}", "--configs", config,
                    "--rounds", 1, "--out", out)
  rows = list(csv.DictReader(out.open()))
  assert {(r["command"], r["cache"]) for r in rows} == {
      (command, cache) for command in ("train tiny_mlp 1 epoch", "evaluate", "predict 1 png")
      for cache in ("cold", "warm")}
  for row in rows:
    assert float(row["wall_s"]) > 0 and float(row["cpu_s"]) > 0
    if row["command"].startswith("train"):
      parts = [float(row[k]) for k in ("compile_s", "epochs_s", "fixed_s")]
      assert all(p > 0 for p in parts) and sum(parts) == pytest.approx(float(row["wall_s"]))


@pytest.mark.slow
@pytest.mark.real_data
def test_speedrun_group_trains_the_seeds_together_to_the_same_accuracies(tmp_path):
  out = tmp_path / "speedrun"
  mnist_jax_command("speedrun", "--seeds", "0,1", "--out", out, "--group",
                    "--set", "num_epochs=1", "--set", "data.train_split=train[:1024]",
                    "--set", "data.test_split=test[:500]")
  result = json.loads((out / "speedrun.json").read_text())
  separate = [row["test_accuracy"] for row in result["rows"]]
  assert result["group"]["accuracies"] == separate  # one vmapped program, same runs
  assert result["group"]["ratio"] > 0 and "--seeds=0,1" in result["group"]["command"]
  for seed in (0, 1):
    assert run_dir.read_metrics(str(out / "group" / f"seed{seed}"))[-1]["epoch"] == 1


# ---------------------------------------------------------------- TensorBoard

def test_tensorboard_shows_the_validation_metrics(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

  from configs import mlp
  rng = np.random.default_rng(0)
  splits = [data_lib.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                           rng.integers(0, 10, n).astype(np.int32)) for n in (128, 40)]
  config = mlp.get_config()
  config.update(num_epochs=2, batch_size=32, eval_batch_size=16, steps_per_dispatch=1)
  config.model.hidden_features = (8,)
  config.data.validation_size = 32
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, data=tuple(splits), verbose=False)
  events = EventAccumulator(workdir, size_guidance={"scalars": 0})
  events.Reload()
  lines = run_dir.read_metrics(workdir)
  for key in ("val_accuracy", "val_loss"):
    assert [(e.step, e.value) for e in events.Scalars(f"epoch/{key}")] == [
        (line["epoch"] * 3, pytest.approx(line[key])) for line in lines], key
