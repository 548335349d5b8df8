"""Data parallel on 4 simulated CPU devices, against the 1-device run of this process.

The pytest process already started JAX with one device, so the 4-device run
is a subprocess with XLA_FLAGS set before it imports JAX.
"""

import jax
import numpy as np
import pytest

from mnist_jax.core import run_dir

from mnist_jax.engine.loop import train_and_evaluate

from helpers import final_params, finish, load_small, start_worker, without_times
from train_worker import make_config

pytestmark = [pytest.mark.real_data, pytest.mark.slow]  # a training process of its own

OVERRIDES = {"num_epochs": 1, "batch_size": 20, "checkpoint.every_steps": 0,
             "model.hidden_features": (32,)}
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


@pytest.fixture(scope="module")
def runs(small_data, tmp_path_factory):
  """(1-device workdir, 4-device workdir, 4-device summary, 1-device params restored on 4)."""
  root = tmp_path_factory.mktemp("devices")
  one, four, restored = root / "one", root / "four", root / "one_on_four.npz"
  train_and_evaluate(make_config(OVERRIDES), str(one), data=load_small(small_data),
                     verbose=False)
  summary = finish(start_worker(four, small_data, OVERRIDES, env_extra=FOUR_DEVICES,
                                args=(one, restored)))
  return one, four, summary, dict(np.load(restored))


def test_four_devices_train_like_one_to_float_tolerance(runs):
  one, four, summary, _ = runs
  assert summary["devices"] == 4 and jax.device_count() == 1
  m1, m4 = (without_times(run_dir.read_metrics(w))[0] for w in (one, four))
  assert m1["step"] == m4["step"] == 100 and m1["test_count"] == m4["test_count"]
  for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
    assert m4[key] == pytest.approx(m1[key], rel=1e-3, abs=2e-3), key


def test_a_checkpoint_saved_on_four_devices_restores_on_one(runs):
  one, four, _, _ = runs
  p1, p4 = final_params(one), final_params(four)
  assert all(x.shape == y.shape for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)))
  for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-4)


def test_a_checkpoint_saved_on_one_device_restores_on_four(runs):
  one, _, _, restored_on_four = runs
  leaves = jax.tree_util.tree_leaves_with_path(final_params(one))
  assert len(leaves) == len(restored_on_four)
  for path, value in leaves:
    assert np.array_equal(restored_on_four[jax.tree_util.keystr(path)], value)


def test_a_batch_size_four_devices_do_not_divide_names_sizes_that_work(runs):
  message = runs[2]["bad_batch_error"]
  assert "6 does not split evenly over 4 devices" in message
  assert "multiple of 4 (e.g. 4 or 8)" in message
