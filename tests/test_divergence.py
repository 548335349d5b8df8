"""A NaN or inf stops the run before it is saved, and the message names the
exact step that diverged, the step where the check found it, and the
checkpoint kept (the newest on disk).

The loop checks only where it saves (loop._check_finite): at the end of each
call that passes a multiple of config.checkpoint.every_steps, and at epoch
ends. The data is noise (tests/helpers.write_noise_npz): divergence needs no
digits, and these tests need no real MNIST.
"""

import re

import jax
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.engine.loop import train_and_evaluate

from helpers import (checkpoint_steps, final_params, load_small, one_error_line,
                     write_noise_npz)
from train_worker import make_config

ADVICE = "lower config.optimizer.learning_rate."


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
  return write_noise_npz(tmp_path_factory.mktemp("data") / "noise.npz")


@pytest.fixture
def cli_on_noise(cli_here, noise, monkeypatch):
  """`python -m mnist_jax ARGS` in this process, MNIST replaced by the noise
  (as tests/cli_on_npz.py does in a process of its own)."""
  splits = load_small(noise)
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: splits)
  return cli_here


def test_checking_every_step_keeps_the_step_before_the_divergence(noise, tmp_path):
  """One step per call and a save every step: found where it happens."""
  config = make_config({
      "num_epochs": 1, "batch_size": 20, "model.hidden_features": (32,),
      "steps_per_dispatch": 1, "checkpoint.every_steps": 1, "optimizer.name": "sgd",
      "optimizer.schedule": "constant", "optimizer.learning_rate": 1e30})
  workdir = tmp_path / "diverged"
  with pytest.raises(UserError) as info:
    train_and_evaluate(config, str(workdir), data=load_small(noise), verbose=False)
  # Step 1's update makes the weights ~1e30, so step 2's logits overflow.
  assert str(info.value) == (
      "training diverged: the loss was NaN or inf at step 2 (epoch 1); the last good "
      f"checkpoint (step 1) is kept; {ADVICE}")
  assert checkpoint_steps(workdir) == [1]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(workdir)))


def test_readme_example_diverges_at_step_2_found_at_15_before_any_save(cli_on_noise,
                                                                      tmp_path):
  """README's command. configs/mlp.py runs 32 steps per call, and 2,000
  images at batch 128 are 15 steps per epoch: one call, checked at its end,
  step 15, where the first save would have been. Nothing was saved."""
  workdir = tmp_path / "nan"
  error = one_error_line(cli_on_noise(
      "train", "--config", "configs/mlp.py", "--workdir", workdir,
      "--config.data.train_split=train[:2000]", "--config.optimizer.name=sgd",
      "--config.optimizer.schedule=constant", "--config.optimizer.learning_rate=1e30",
      "--config.checkpoint.every_steps=1"))
  assert error == ("error: training diverged: the loss was NaN or inf at step 2 "
                   "(epoch 1), found at step 15; no checkpoint was saved before it; "
                   f"{ADVICE}")
  assert checkpoint_steps(workdir) == []
  assert run_dir.read_metrics(workdir) == []


def test_a_coarser_save_interval_keeps_the_newest_good_checkpoint_it_names(cli_on_noise,
                                                                          tmp_path):
  """Epoch 1 trains at 1e-3; then an 'exponential decay' of 1e33 per epoch
  makes the rate 1e30, so the loss overflows right after epoch 2 starts.
  32 steps per call (configs/mlp.py), 100 steps per epoch, a save every 50
  steps: saves at 64 and 100 (epoch end); in epoch 2 the call ending at 132
  passes no multiple of 50, the one ending at 164 passes 150 and checks."""
  workdir = tmp_path / "nan"
  error = one_error_line(cli_on_noise(
      "train", "--config", "configs/mlp.py", "--workdir", workdir,
      "--config.num_epochs=2", "--config.batch_size=20",
      "--config.optimizer.schedule=exponential",
      "--config.optimizer.decay_per_epoch=1e33", "--config.checkpoint.every_steps=50"))
  match = re.fullmatch(r"error: training diverged: the loss was NaN or inf at step "
                       r"(\d+) \(epoch 2\), found at step 164; the last good checkpoint "
                       rf"\(step (\d+)\) is kept; {re.escape(ADVICE)}", error)
  assert match, error
  bad, kept = int(match[1]), int(match[2])
  assert 100 < bad <= 132
  assert kept == checkpoint_steps(workdir)[-1] == 100  # the newest on disk
  assert checkpoint_steps(workdir) == [64, 100]  # nothing saved after the divergence
  assert [m["epoch"] for m in run_dir.read_metrics(workdir)] == [1]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(workdir)))
