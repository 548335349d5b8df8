"""The frontier table: members' selected epochs, their mean, the ensembles, the papers."""

import os

import numpy as np
import pytest

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.config import load_config_file
from mnist_jax.core.errors import UserError
from mnist_jax.studies import runner

from experiments import frontier


def hand_made_member(workdir, val_accuracies, test_accuracies, select="best_val"):
  config = load_config_file("configs/frontier_cpu.py")
  config.num_epochs = len(val_accuracies)
  config.select = select
  config.data.validation_size = 5000 if select == "best_val" else 0
  run_dir.write_config(workdir, config)
  for epoch, (val, test) in enumerate(zip(val_accuracies, test_accuracies), start=1):
    metrics = {k: 0.0 for k in run_dir.METRIC_KEYS}
    metrics.update(epoch=epoch, val_accuracy=val, test_accuracy=test,
                   epoch_time_s=60.0)
    run_dir.append_metrics(workdir, metrics)


def test_table_reports_the_best_validation_epoch_not_the_best_test_epoch(tmp_path):
  members = frontier.RECIPES["cpu"][:2]
  workdirs = [str(tmp_path / m.name) for m in members]
  # Member 0: best validation at epoch 2, whose test accuracy is not its best.
  hand_made_member(workdirs[0], [0.99, 0.995, 0.993], [0.9960, 0.9950, 0.9970])
  hand_made_member(workdirs[1], [0.99, 0.991, 0.996], [0.9940, 0.9950, 0.9960])
  result = {"average": {"accuracy": 0.9968}, "vote": {"accuracy": 0.9966}}
  table = frontier.frontier_table("cpu", members, workdirs, result)
  by_name = {row[0]: row for row in table.rows}
  first = by_name["ours, `cpu` recipe: configs/frontier_cpu.py seed 0"]
  assert first[2] == pytest.approx(99.50) and "(epoch 2)" in first[4]
  assert first[3] == "3.0"  # three 60 s epochs
  mean = by_name["ours, `cpu` recipe: single model, mean ± std (n=2)"][2]
  assert mean.mean == pytest.approx(99.55) and mean.n == 2
  vote = by_name["ours, `cpu` recipe: ensemble of 2, majority vote"]
  assert vote[2] == pytest.approx(99.66) and vote[1] == 2 * first[1]
  assert by_name["An et al. 2020: M3, M5, M7, majority vote"][2] == 99.87
  markdown = table.to_markdown()
  assert "99.55 ± 0.07" in markdown and "selection on the test set" in markdown


def test_a_recipe_without_validation_reports_the_last_epoch(tmp_path):
  members = frontier.RECIPES["cpu"][:1]
  workdirs = [str(tmp_path / members[0].name)]
  hand_made_member(workdirs[0], [0.0, 0.0], [0.9970, 0.9960], select="last")
  result = {"average": {"accuracy": 0.996}, "vote": {"accuracy": 0.996}}
  row = frontier.frontier_table("cpu", members, workdirs, result).rows[0]
  assert row[2] == pytest.approx(99.60) and row[4] == "last epoch, no selection (epoch 2)"


def test_tables_only_refuses_unfinished_members(tmp_path):
  hand_made_member(str(tmp_path / "seed_0"), [0.99], [0.99])
  with pytest.raises(frontier.UserError, match="unfinished members.*--tables_only"):
    frontier.run("cpu", out=str(tmp_path), tables_only=True)
  assert not os.path.exists(tmp_path / "tables")


def train_failing_seed_0(config, workdir, *, data=None, verbose=True):
  """A run directory as train_and_evaluate writes it; seed 0 diverges."""
  if config.seed == 0:
    raise UserError("training diverged: lower config.optimizer.learning_rate.")
  run_dir.write_config(workdir, config)
  metrics = {k: 0.0 for k in run_dir.METRIC_KEYS}
  metrics.update(test_accuracy=0.5)
  for epoch in range(1, config.num_epochs + 1):
    run_dir.append_metrics(workdir, dict(metrics, epoch=epoch))
  return dict(metrics, compile_time_s=1.0)


def test_a_failed_member_is_recorded_the_others_train_then_one_error_names_it(
    tmp_path, monkeypatch, capsys):
  split = data_lib.Split(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int32))
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: (split, split))
  monkeypatch.setattr(runner, "train_and_evaluate", train_failing_seed_0)
  members = frontier.RECIPES["cpu"]
  monkeypatch.setitem(frontier.RECIPES, "two", members[:2])
  with pytest.raises(UserError, match=r"1 of 2 runs failed \(seed_0 seed 0: training "
                     "diverged.*run the same command again"):
    frontier.run("two", out=str(tmp_path))
  assert run_dir.read_failure(str(tmp_path / "seed_0")).startswith("training diverged")
  config = frontier.member_config(members[1])
  assert run_dir.is_finished(str(tmp_path / "seed_1"), config.num_epochs)  # went on
  assert "[frontier] seed_1 seed 1: test accuracy 0.5000" in capsys.readouterr().out
  assert not os.path.exists(tmp_path / "tables")  # no table of a partial recipe
