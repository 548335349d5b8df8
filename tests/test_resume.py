"""Checkpoints, resume after SIGKILL, determinism, refusing another config.

Subprocess runs use tests/train_worker.py on a 2,000-image slice of the real
MNIST saved to an .npz, so they skip TensorFlow and tfds.
"""

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

from helpers import (assert_same_bits, checkpoint_steps, final_params, finish, load_small,
                     start_worker, without_times)
from train_worker import STALL_ENV, make_config

pytestmark = pytest.mark.real_data

# 100 steps per epoch, one per call; saves every 9 steps, so most checkpoints
# are mid-epoch.
OVERRIDES = {"num_epochs": 2, "batch_size": 20, "checkpoint.every_steps": 9,
             "model.hidden_features": (32,), "steps_per_dispatch": 1}


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory):
  """A run trained in this process (tests read it, never change it)."""
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  train_and_evaluate(make_config(OVERRIDES), str(workdir), data=load_small(small_data),
                     verbose=False)
  return workdir


@pytest.mark.slow
def test_two_processes_with_one_seed_give_the_same_bits(uninterrupted, small_data,
                                                        tmp_path):
  """This pytest process vs a separate one: same seed, same (1) device count."""
  workdir = tmp_path / "there"
  finish(start_worker(workdir, small_data, OVERRIDES))
  assert (without_times(run_dir.read_metrics(workdir))
          == without_times(run_dir.read_metrics(uninterrupted)))
  assert_same_bits(final_params(workdir), final_params(uninterrupted))


# configs/cnn.py cut to two tiny stages, its dropout 0.25 kept: 100 steps per
# epoch, 4 per call (a divisor of the MLP's 32), a save at the end of each call
# that passes a multiple of 12: steps 12, 24, ..., 96, 100 (epoch end), 108, 120, 132, ...
CNN = {"config": "configs/cnn.py", "model.features": (4, 8), "model.kernel_sizes": (3, 3),
       "model.strides": (1, 1), "model.activations": ("relu", "relu"),
       "model.pooling": ("max", "max"), "model.dense_features": (16,),
       "num_epochs": 2, "batch_size": 20, "steps_per_dispatch": 4,
       "checkpoint.every_steps": 12}


def wait_for_a_mid_epoch_checkpoint(proc, workdir, steps_per_epoch, after, timeout=240):
  """Polls the checkpoint folder until a complete checkpoint later than step
  `after` that is not an epoch end exists."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if any(s > after and s % steps_per_epoch for s in checkpoint_steps(workdir)):
      return
    time.sleep(0.01)
  pytest.fail(f"no mid-epoch checkpoint after step {after} (exit status {proc.poll()})")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_ends_as_if_never_killed(small_data, tmp_path):
  """A CNN with dropout, 4 steps per call, killed in the middle of epoch 2.

  The worker stops for good before saving step 132 (train_worker's
  STALL_BEFORE_SAVING), so once a mid-epoch-2 checkpoint exists the kill
  lands mid-epoch for certain, with steps trained past the newest checkpoint
  that the restart must redo with the same dropout masks and batches. The
  three processes share a JAX compilation cache: one compiles, two load.
  """
  assert make_config(CNN).model.dropout_rate == 0.25
  cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  unbroken = tmp_path / "unbroken"
  finish(start_worker(unbroken, small_data, CNN, env_extra=cache))

  killed = tmp_path / "killed"
  proc = start_worker(killed, small_data, CNN, env_extra={**cache, STALL_ENV: "132"})
  wait_for_a_mid_epoch_checkpoint(proc, killed, steps_per_epoch=100, after=100)
  assert proc.poll() is None, "the worker ended before it was killed"
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert checkpoint_steps(killed)[-1] in (108, 120)  # mid-epoch 2, never past 132
  assert [m["epoch"] for m in run_dir.read_metrics(killed)] == [1]

  finish(start_worker(killed, small_data, CNN, env_extra=cache))
  lines = run_dir.read_metrics(killed)
  assert [m["epoch"] for m in lines] == [1, 2]  # none missing, none twice
  assert without_times(lines) == without_times(run_dir.read_metrics(unbroken))
  assert_same_bits(final_params(killed), final_params(unbroken))


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
