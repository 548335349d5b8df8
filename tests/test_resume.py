"""Checkpoints, resume after SIGKILL, determinism, refusing another config, NaN stops.

Subprocess runs use tests/train_worker.py on a 2,000-image slice of the real
MNIST saved to an .npz, so they skip TensorFlow and tfds.
"""

import pathlib
import signal
import time

import jax
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import run_dir
from mnist_jax.engine import checkpoint
from mnist_jax.engine import steps as steps_lib
from mnist_jax.engine.loop import train_and_evaluate

from helpers import (assert_same_bits, final_params, finish, load_small,
                     start_worker, without_times)
from train_worker import make_config

pytestmark = pytest.mark.real_data

# 100 steps per epoch, one per call; saves every 9 steps, so most checkpoints
# are mid-epoch.
OVERRIDES = {"num_epochs": 2, "batch_size": 20, "checkpoint.every_steps": 9,
             "model.hidden_features": (32,), "steps_per_dispatch": 1}


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  finish(start_worker(workdir, small_data, OVERRIDES))
  return workdir


def test_two_processes_with_one_seed_give_the_same_bits(uninterrupted, small_data,
                                                        tmp_path):
  """This pytest process vs a separate one: same seed, same (1) device count."""
  data = load_small(small_data)
  workdir = tmp_path / "here"
  train_and_evaluate(make_config(OVERRIDES), str(workdir), data=data, verbose=False)
  assert (without_times(run_dir.read_metrics(workdir))
          == without_times(run_dir.read_metrics(uninterrupted)))
  assert_same_bits(final_params(workdir), final_params(uninterrupted))


def wait_for_first_epoch_line(proc, workdir, timeout=180):
  deadline = time.monotonic() + timeout
  metrics = pathlib.Path(workdir) / run_dir.METRICS_FILE
  while time.monotonic() < deadline and proc.poll() is None:
    if metrics.is_file() and metrics.read_text().strip():
      return
    time.sleep(0.01)
  pytest.fail(f"the run wrote no epoch line (exit status {proc.poll()})")


def test_sigkill_mid_run_then_restart_ends_as_if_never_killed(uninterrupted,
                                                              small_data, tmp_path):
  workdir = tmp_path / "killed"
  proc = start_worker(workdir, small_data, OVERRIDES)
  wait_for_first_epoch_line(proc, workdir)  # now in epoch 2
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  killed_at = checkpoint.manager(str(workdir)).latest_step()
  assert killed_at is not None and killed_at < 200  # it really was interrupted

  finish(start_worker(workdir, small_data, OVERRIDES))
  lines = run_dir.read_metrics(workdir)
  assert [m["epoch"] for m in lines] == [1, 2]  # none missing, none twice
  assert without_times(lines) == without_times(run_dir.read_metrics(uninterrupted))
  assert_same_bits(final_params(workdir), final_params(uninterrupted))


def test_checkpoints_are_kept_every_n_steps_and_at_epoch_ends(uninterrupted):
  steps = checkpoint.manager(str(uninterrupted)).all_steps()
  assert sorted(steps) == [189, 198, 200]  # max_to_keep=3: 9-step saves, then the end


def test_a_workdir_with_another_config_is_refused_naming_the_keys(uninterrupted,
                                                                  tmp_path):
  config = make_config(dict(OVERRIDES, seed=5, **{"optimizer.learning_rate": 0.01}))
  with pytest.raises(UserError, match=r"optimizer\.learning_rate: 0\.001 -> 0\.01.*"
                     r"seed: 0 -> 5.*--force"):
    train_and_evaluate(config, str(uninterrupted), data=((), ()), verbose=False)
  assert len(run_dir.read_metrics(uninterrupted)) == 2  # untouched


def test_force_overwrites_the_old_run(tmp_path):
  workdir = str(tmp_path / "run")
  old = make_config(OVERRIDES)
  run_dir.claim(workdir, old, force=False)
  run_dir.append_metrics(workdir, {k: 1 for k in run_dir.METRIC_KEYS})
  new = make_config(dict(OVERRIDES, num_epochs=5))
  run_dir.claim(workdir, new, force=True)
  assert run_dir.read_config(workdir).num_epochs == 5
  assert run_dir.read_metrics(workdir) == []


def test_resume_drops_metric_lines_past_the_checkpoint(tmp_path):
  workdir = str(tmp_path)
  for epoch in (1, 2, 3):
    run_dir.append_metrics(workdir, dict({k: 0 for k in run_dir.METRIC_KEYS},
                                         epoch=epoch))
  run_dir.keep_epochs(workdir, 2)
  assert [m["epoch"] for m in run_dir.read_metrics(workdir)] == [1, 2]


def test_a_diverging_run_stops_naming_the_step_and_keeps_good_checkpoints(
    small_data, tmp_path):
  data = load_small(small_data)
  config = make_config(dict(OVERRIDES, **{
      "optimizer.name": "sgd", "optimizer.schedule": "constant",
      "optimizer.learning_rate": 1e30, "checkpoint.every_steps": 1}))
  workdir = str(tmp_path / "diverged")
  with pytest.raises(UserError, match=r"diverged.*step (\d+).*learning_rate") as info:
    train_and_evaluate(config, workdir, data=data, verbose=False)
  bad_step = int(info.value.args[0].split("step ")[1].split()[0].strip("(),"))
  mngr = checkpoint.manager(workdir)
  assert mngr.all_steps() and max(mngr.all_steps()) < bad_step
  assert f"checkpoint (step {max(mngr.all_steps())}) is kept" in str(info.value)
  params = final_params(workdir)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_several_steps_per_call_train_the_same_run(uninterrupted, small_data, tmp_path):
  """7 steps per call (100 = 14 x 7 + 2: a ragged last call each epoch) vs 1."""
  data = load_small(small_data)
  workdir = tmp_path / "k7"
  train_and_evaluate(make_config(dict(OVERRIDES, steps_per_dispatch=7)), str(workdir),
                     data=data, verbose=False)
  lines, ref = (without_times(run_dir.read_metrics(d)) for d in (workdir, uninterrupted))
  assert [m["step"] for m in lines] == [100, 200]
  for got, want in zip(lines, ref, strict=True):
    assert got == pytest.approx(want, rel=1e-5)
  for x, y in zip(jax.tree.leaves(final_params(workdir)),
                  jax.tree.leaves(final_params(uninterrupted)), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  # every_steps=9 with 7-step calls: a save at the first call end past each
  # multiple of 9 (..., 189 -> 191, 198 -> 198), then the epoch end.
  assert sorted(checkpoint.manager(str(workdir)).all_steps()) == [191, 198, 200]


def test_dispatch_spans_cover_the_epoch_and_realign_after_a_resume():
  assert list(steps_lib.dispatch_spans(0, 10, 4)) == [(0, 4), (4, 8), (8, 10)]
  assert list(steps_lib.dispatch_spans(5, 10, 4)) == [(5, 8), (8, 10)]
  assert list(steps_lib.dispatch_spans(3, 5, 1)) == [(3, 4), (4, 5)]
  assert list(steps_lib.dispatch_spans(10, 10, 4)) == []
