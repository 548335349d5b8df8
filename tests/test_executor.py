"""Executors without Ray: failed runs are recorded and reported, progress lines, flags.

The Ray executor itself is tested in test_executor_ray.py (one local Ray) and
test_executor_cluster.py (two Ray nodes on localhost).
"""

import os
import pathlib

import numpy as np
import pytest

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.studies import executor as executor_lib, runner as study_lib, script, spec

MLP = "configs/mlp.py"
STUDY = spec.Study("tiny", [spec.Point("linear", MLP, {"model.hidden_features": ()}),
                            spec.Point("mlp8", MLP, {"model.hidden_features": (8,)})])
PRESET = spec.Preset(seeds=(0, 1), overrides={"num_epochs": 1})
BROKEN = os.path.join("mlp8", "seed_0")


def fake_train(config, workdir, *, data=None, verbose=True):
  """A run directory as train_and_evaluate writes it; mlp8 seed 0 diverges."""
  if workdir.endswith(BROKEN) and not os.environ.get("MNIST_JAX_TEST_FIXED"):
    raise UserError("training diverged: lower config.optimizer.learning_rate.")
  run_dir.write_config(workdir, config)
  metrics = {k: 0.0 for k in run_dir.METRIC_KEYS}
  metrics.update(epoch=1, test_accuracy=0.5 + 0.1 * config.seed)
  run_dir.append_metrics(workdir, metrics)
  return dict(metrics, compile_time_s=1.0)


@pytest.fixture
def no_mnist(monkeypatch):
  split = data_lib.Split(np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4, np.int32))
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: (split, split))


def test_a_failed_run_is_recorded_the_study_goes_on_and_a_rerun_retries_it(
    tmp_path, no_mnist, monkeypatch):
  out, lines = str(tmp_path / "study"), []
  runs = study_lib.run_study(STUDY, PRESET, out, train_fn=fake_train, log=lines.append)
  finished = [r for r in runs if study_lib.is_finished(r)]
  assert [(r.point.name, r.seed) for r in finished] == [
      ("linear", 0), ("linear", 1), ("mlp8", 1)]  # the runs after the failure too
  broken = os.path.join(out, BROKEN)
  assert run_dir.read_failure(broken).startswith("training diverged")
  assert lines[1].startswith("[tiny] mlp8 seed 0: FAILED: training diverged: lower "
                             "config.optimizer.learning_rate. (")
  assert lines[3].endswith("3/4 done, 0 queued or running, 1 failed")
  with pytest.raises(UserError, match=r"1 of 4 runs failed \(mlp8 seed 0: training "
                     "diverged.*run the same command again"):
    executor_lib.raise_failures(runs)

  monkeypatch.setenv("MNIST_JAX_TEST_FIXED", "1")
  lines.clear()
  runs = study_lib.run_study(STUDY, PRESET, out, train_fn=fake_train, log=lines.append)
  assert run_dir.read_failure(broken) is None
  executor_lib.raise_failures(runs)  # nothing failed: no error
  assert sum("finished before, skipped" in line for line in lines) == 3


def test_one_progress_line_per_finished_run_with_the_counts(tmp_path, no_mnist):
  lines = []
  study_lib.run_study(STUDY, spec.Preset(seeds=(1,)), str(tmp_path), log=lines.append,
                      train_fn=lambda c, w, **k: dict(fake_train(c, w), test_accuracy=0.25))
  assert [line.split(" (")[0] for line in lines] == [
      "[tiny] linear seed 1: test accuracy 0.2500",
      "[tiny] mlp8 seed 1: test accuracy 0.2500"]
  assert [line.split(" | ")[1] for line in lines] == [
      "1/2 done, 1 queued or running, 0 failed", "2/2 done, 0 queued or running, 0 failed"]
  assert run_dir.read_extras(os.path.join(tmp_path, "mlp8", "seed_1"))["worker"][
      "pid"] == os.getpid()  # inline: trained in this process


def test_the_study_script_writes_its_tables_then_names_the_failed_run(
    tmp_path, no_mnist, monkeypatch):
  monkeypatch.setattr(study_lib, "train_and_evaluate", fake_train)
  out = str(tmp_path / "study")

  def report(study, preset, study_dir, results):
    path = os.path.join(study_dir, "tables", "t.md")
    os.makedirs(os.path.dirname(path))
    pathlib.Path(path).write_text(f"{sum(len(p.runs) for p in results)} runs\n")
    return [path]
  # The CLI's one error handler turns this UserError into `error: ...`, exit 2.
  with pytest.raises(UserError, match=r"^1 of 4 runs failed \(mlp8 seed 0: training diverged"):
    script.run(STUDY, {"cpu": PRESET}, report, out=out)
  assert pathlib.Path(out, "tables", "t.md").read_text() == "3 runs\n"


@pytest.mark.parametrize("placement, message", [
    ({"address": "10.0.0.1:6379"}, "add --executor ray"),
    ({"executor": "ray", "gpus_per_run": 1.5}, "whole number of GPUs"),
    ({"executor": "ray", "cpus_per_run": 0}, "cpus > 0"),
])
def test_impossible_placements_are_refused_before_any_work(tmp_path, no_mnist, placement,
                                                           message):
  with pytest.raises(UserError, match=message):
    study_lib.run_study(STUDY, PRESET, str(tmp_path), train_fn=fake_train, log=len,
                        **placement)
  assert not os.path.exists(os.path.join(tmp_path, "linear"))


def _no_report(study, preset, study_dir, results):
  return []


def test_a_second_study_on_one_out_folder_is_refused_at_once(tmp_path, no_mnist,
                                                             monkeypatch):
  from mnist_jax.core import workdir
  monkeypatch.setattr(study_lib, "train_and_evaluate", fake_train)
  out = str(tmp_path / "study")
  with workdir.locked(out):  # the first study, still running
    with pytest.raises(UserError, match=rf"^{out} is being trained by process "
                       rf"{os.getpid()}: .* use another --out\.$"):
      script.run(STUDY, {"cpu": PRESET}, _no_report, out=out)
  assert os.listdir(out) == ["train.lock"]  # no run touched, none recorded as failed


def test_an_empty_out_folder_is_refused(tmp_path, no_mnist, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match=r"--out is empty \(--out=\).*runs/studies/tiny"):
    script.run(STUDY, {"cpu": PRESET}, _no_report, out="")
  assert os.listdir(tmp_path) == []


def test_a_failed_run_finished_later_clears_its_failure(tmp_path, no_mnist, monkeypatch):
  out = str(tmp_path / "study")
  runs = study_lib.run_study(STUDY, PRESET, out, train_fn=fake_train, log=len)
  broken = os.path.join(out, BROKEN)
  assert run_dir.read_failure(broken)
  # Finished elsewhere (another process, `train --workdir`): the study skips it.
  monkeypatch.setenv("MNIST_JAX_TEST_FIXED", "1")
  [run] = [r for r in runs if r.workdir == broken]
  fake_train(run.config, broken)
  runs = study_lib.run_study(STUDY, PRESET, out, train_fn=fake_train, log=len)
  assert run_dir.read_failure(broken) is None
  executor_lib.raise_failures(runs)  # nothing failed: no error


def test_a_failed_runs_advice_names_what_a_study_can_do(tmp_path, no_mnist):
  def damaged(config, workdir, **kwargs):
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    pathlib.Path(workdir, run_dir.METRICS_FILE).write_text("{garbage\n{}\n")
    return run_dir.read_metrics(workdir)  # run_dir's own message, naming --force

  out = str(tmp_path / "study")
  study_lib.run_study(STUDY, spec.Preset(seeds=(0,)), out, train_fn=damaged, log=len)
  reason = run_dir.read_failure(os.path.join(out, BROKEN))
  assert "--force" not in reason and "--workdir" not in reason
  assert f"delete {os.path.join(out, BROKEN)}" in reason
  # Read again by the study itself (before any training): the same advice.
  with pytest.raises(UserError) as e:
    script.run(STUDY, {"cpu": spec.Preset(seeds=(0,))}, _no_report, out=out)
  assert "metrics.jsonl line 1" in str(e.value) and "--force" not in str(e.value)
  assert "delete that run's folder" in str(e.value)
