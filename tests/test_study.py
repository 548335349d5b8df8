"""Studies: restart skips finished runs, aggregation statistics, table formats."""

import os

import numpy as np
import pytest

from mnist_jax.studies import (results as aggregate, catalog, reports, runner as study_lib, spec,
                               stats)
from mnist_jax.core.config import load_config_file
from mnist_jax.core.errors import UserError
from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.studies.tables import Column, Table

MLP = "configs/mlp.py"


def tiny_study():
  return spec.Study("tiny", [
      spec.Point("linear", MLP, {"model.hidden_features": ()}),
      spec.Point("mlp8", MLP, {"model.hidden_features": (8,)}),
      # stride 3 then 2x2 pooling in every stage leaves nothing: impossible.
      spec.Point("impossible", "configs/cnn.py",
                      {"model.strides": (3, 3, 3)}),
  ])


PRESET = spec.Preset(seeds=(0, 1), overrides={"num_epochs": 2})


def fake_train(calls):
  """Writes a run directory as train_and_evaluate would, without training.

  Like train_and_evaluate, it continues an unfinished run after its last epoch.
  """
  def train(config, workdir, *, data=None, verbose=True):
    calls.append(workdir)
    run_dir.write_config(workdir, config)
    done = len(run_dir.read_metrics(workdir))
    for epoch in range(done + 1, config.num_epochs + 1):
      metrics = {k: 0.0 for k in run_dir.METRIC_KEYS}
      metrics.update(epoch=epoch, test_accuracy=0.5 + 0.1 * config.seed)
      run_dir.append_metrics(workdir, metrics)
    return dict(metrics, compile_time_s=1.0)
  return train


@pytest.fixture
def no_mnist(monkeypatch):
  """The study loads data once; a tiny fake split stands in for MNIST."""
  loads = []

  def load(*args, **kwargs):
    loads.append(kwargs)
    split = data_lib.Split(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int32))
    return split, split
  monkeypatch.setattr(data_lib, "load_mnist", load)
  return loads


def test_restarted_study_skips_finished_runs_and_resumes_the_unfinished(tmp_path, no_mnist):
  out = str(tmp_path / "study")
  calls = []
  study_lib.run_study(tiny_study(), PRESET, out, train_fn=fake_train(calls), log=len)
  assert len(calls) == 4 and len(no_mnist) == 1  # 2 points x 2 seeds, data once
  assert run_dir.read_rejection(os.path.join(out, "impossible")).startswith("CNN stage")
  assert not os.path.exists(os.path.join(out, "impossible", "seed_0"))

  # Interrupt one run mid-way: its last epoch is lost, a stray file remains.
  partial = os.path.join(out, "mlp8", "seed_1")
  lines = open(os.path.join(partial, run_dir.METRICS_FILE)).readlines()
  open(os.path.join(partial, run_dir.METRICS_FILE), "w").writelines(lines[:1])
  open(os.path.join(partial, "stray"), "w").close()

  calls.clear()
  study_lib.run_study(tiny_study(), PRESET, out, train_fn=fake_train(calls), log=len)
  assert calls == [partial]
  assert os.path.exists(os.path.join(partial, "stray"))  # resumed, not deleted
  assert [m["epoch"] for m in run_dir.read_metrics(partial)] == [1, 2]

  calls.clear()
  study_lib.run_study(tiny_study(), PRESET, out, train_fn=fake_train(calls), log=len)
  assert calls == [] and len(no_mnist) == 2  # nothing to train: no data loaded


def test_finished_run_of_another_config_is_not_taken_for_this_one(tmp_path, no_mnist):
  out = str(tmp_path / "study")
  study_lib.run_study(tiny_study(), PRESET, out, train_fn=fake_train([]), log=len)
  other = spec.Preset(seeds=(0, 1), overrides={"num_epochs": 2, "batch_size": 64})
  with pytest.raises(UserError, match="another config.*another --out"):
    study_lib.run_study(tiny_study(), other, out, train_fn=fake_train([]), log=len)


def hand_made_run(workdir, accuracies, num_epochs=None, params=1000):
  """A run directory with one epoch per entry of `accuracies`."""
  config = load_config_file(MLP)
  config.num_epochs = num_epochs or len(accuracies)
  run_dir.write_config(workdir, config)
  for epoch, acc in enumerate(accuracies, start=1):
    metrics = {k: 0.0 for k in run_dir.METRIC_KEYS}
    metrics.update(epoch=epoch, test_accuracy=acc, train_time_s=10.0 * epoch)
    run_dir.append_metrics(workdir, metrics)
  run_dir.update_extras(workdir, num_params=params, macs_per_image=2 * params,
                        train_time_s=10.0 * len(accuracies))


def test_aggregation_mean_and_sample_std_over_seeds(tmp_path):
  study = spec.Study("hand", [spec.Point("a", MLP)])
  preset = spec.Preset(seeds=(0, 1, 2, 3))
  out = str(tmp_path)
  point = study.points[0]
  finals = [0.90, 0.92, 0.97]
  for seed, final in enumerate(finals):
    hand_made_run(spec.run_workdir(out, point, seed), [0.5, final])
  # Seed 3 stopped after one of two epochs: not counted.
  hand_made_run(spec.run_workdir(out, point, 3), [0.1], num_epochs=2)

  [result] = aggregate.collect(study, preset, out)
  stat = result.final("test_accuracy")
  assert stat.n == 3
  assert stat.mean == pytest.approx(0.93)
  # sample std: sqrt(((-0.03)^2 + (-0.01)^2 + 0.04^2) / (3 - 1))
  assert stat.std == pytest.approx(np.sqrt(0.0026 / 2))
  assert [s.mean for s in result.curve("test_accuracy")] == pytest.approx([0.5, 0.93])

  row = reports.summary_table([result]).rows[0]
  assert row[2] == 1000 and row[4] == 3
  assert row[6].mean == pytest.approx(7.0) and row[6].std == pytest.approx(100 * stat.std)


def test_one_seed_has_no_std_and_tables_say_so():
  stat = stats.mean_std([0.9])
  assert stat.n == 1 and stat.mean == 0.9 and np.isnan(stat.std)
  table = Table([Column("model"), Column("acc", ".2f")], [["a_b", stat]])
  assert "0.90 ± n/a" in table.to_markdown()
  assert r"a\_b & 0.90 $\pm$ n/a \\" in table.to_latex()


def test_table_formats_agree_on_the_numbers():
  stat = stats.MeanStd(98.123, 0.456, 3)
  table = Table([Column("model"), Column("params", ",d"), Column("acc (%)", ".2f")],
                [["CNN", 241546, stat], ["rejected", None, None]], caption="c", notes=["n1"])
  md = table.to_markdown().splitlines()
  assert md[0] == "| model | params | acc (%) |"
  assert md[2] == "| CNN | 241,546 | 98.12 ± 0.46 |"
  assert md[3] == "| rejected | — | — |"
  tex = table.to_latex()
  assert r"\toprule" in tex and r"\bottomrule" in tex
  assert r"CNN & 241,546 & 98.12 $\pm$ 0.46 \\" in tex and r"acc (\%)" in tex
  csv_lines = table.to_csv().splitlines()
  assert csv_lines[0] == "model,params,acc (%)_mean,acc (%)_std"
  assert csv_lines[1] == "CNN,241546,98.123,0.456"
  assert csv_lines[2] == "rejected,,,"


def test_overrides_reject_unknown_fields():
  point = spec.Point("x", MLP, {"model.hiden_features": (8,)})
  with pytest.raises(UserError, match="hiden_features.*no such field"):
    spec.point_config(point, PRESET, 0)


@pytest.mark.slow  # trains the seeds together, then each alone
def test_vmap_seeds_trains_each_point_once_with_results_equal_to_separate_runs(
    tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  split = lambda n: data_lib.Split(
      rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
      rng.integers(0, 10, n).astype(np.int32))
  splits = (split(96), split(40))
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: splits)
  study = spec.Study("tiny", [spec.Point("mlp8", MLP, {
      "model.hidden_features": (8,)})])
  preset = spec.Preset(seeds=(0, 1), overrides={  # a validation split: allowed now
      "num_epochs": 1, "batch_size": 32, "eval_batch_size": 20,
      "data.validation_size": 32, "select": "best_val"})
  messages = []
  runs = study_lib.run_study(study, preset, str(tmp_path / "v"), log=messages.append,
                             vmap_seeds=True)
  assert any("seeds [0, 1]: training together" in m for m in messages)
  from mnist_jax.engine import loop as loop_lib
  for run in runs:
    assert run_dir.read_extras(run.workdir)["trained_with_seeds"] == [0, 1]
    alone = loop_lib.train_and_evaluate(run.config, str(tmp_path / f"alone{run.seed}"),
                                     data=splits, verbose=False)
    together = run_dir.read_metrics(run.workdir)[-1]
    assert together["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-4)
    assert together["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-4)


def test_a_started_run_is_left_out_of_the_seeds_trained_together(tmp_path):
  study = spec.Study("tiny", [spec.Point("mlp8", MLP, {})])
  preset = spec.Preset(seeds=(0, 1, 2), overrides={})
  runs = study_lib.plan(study, preset, str(tmp_path))
  assert [[r.seed for r in g] for g in study_lib.seed_groups(runs)] == [[0, 1, 2]]
  os.makedirs(runs[1].workdir)  # seed 1 was interrupted: it resumes on its own
  assert [[r.seed for r in g] for g in study_lib.seed_groups(runs)] == [[0, 2]]
  os.makedirs(runs[2].workdir)
  assert study_lib.seed_groups(runs) == []  # one fresh seed: nothing to vmap


def test_an_interrupted_group_resumes_together(tmp_path):
  study = spec.Study("tiny", [spec.Point("mlp8", MLP, {})])
  preset = spec.Preset(seeds=(0, 1, 2), overrides={"num_epochs": 1})
  runs = study_lib.plan(study, preset, str(tmp_path))
  for run in runs[:2]:  # as _train_together marks a group when it starts it
    run_dir.update_extras(run.workdir, trained_with_seeds=[0, 1])
  os.makedirs(runs[2].workdir)  # seed 2, started alone, resumes alone
  assert [[r.seed for r in g] for g in study_lib.seed_groups(runs)] == [[0, 1]]
  run_dir.write_config(runs[0].workdir, runs[0].config)
  run_dir.append_metrics(runs[0].workdir, dict({k: 0 for k in run_dir.METRIC_KEYS}, epoch=1))
  assert study_lib.seed_groups(runs) == []  # seed 0 finished (1 epoch): no group left


@pytest.mark.parametrize("name", ["mlp_vs_cnn", "robustness", "kernel_size", "stride"])
def test_studies_of_architectures_train_every_point_on_plain_images(name):
  # configs/cnn.py augments its training images; these studies compare models,
  # so each point, the CNN's included, trains on the images as MNIST gives them.
  study = catalog.load_study(name).STUDY
  plain = load_config_file(MLP).augment.to_dict()
  for point in study.points:
    augment = spec.point_config(point, PRESET, seed=0).augment
    assert augment.to_dict() == plain, point.name
