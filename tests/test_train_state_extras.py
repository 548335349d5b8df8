"""Batch norm statistics, the EMA of the weights and augmentation in the train step.

A throwaway batch norm model is registered here (the real ones, M3/M5/M7,
live in the model registry); data is seeded noise, so nothing needs MNIST.
"""

import functools
import os
import shutil

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.core import config as config_lib, data, models, run_dir
from mnist_jax.engine import evaluate as eval_lib, mesh as mesh_lib, restore as restore_lib, state as state_lib, steps as steps_lib
from mnist_jax.engine.loop import train_and_evaluate

from helpers import assert_same_bits, without_times

from configs import mlp as mlp_config

BN_MODEL = "test_tiny_bn"


class TinyBN(nn.Module):
  """conv -> batch norm -> relu -> dense, as the contract's BN models do it."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), strides=(2, 2), use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3)(x)
    return nn.Dense(10)(nn.relu(x).reshape(x.shape[0], -1))


if BN_MODEL not in models.model_names():
  models.register(BN_MODEL)(lambda cfg: TinyBN())


def make_config(**overrides) -> ml_collections.ConfigDict:
  config = config_lib.base_config()
  config.model = ml_collections.ConfigDict({"name": BN_MODEL})
  config.update(num_epochs=2, batch_size=20, eval_batch_size=50)
  config.optimizer.schedule = "constant"
  config.checkpoint.every_steps = 3
  for key, value in overrides.items():
    parent, *path = config, *key.split(".")
    for part in path[:-1]:
      parent = parent[part]
    parent[path[-1]] = value
  return config


def noise_split(n, seed):
  rng = np.random.default_rng(seed)
  return data.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                    (np.arange(n) % 10).astype(np.int32))


def batch_of(split, n=20):
  return {"image": split.images[:n], "label": split.labels[:n]}


def test_run_keys_keep_the_three_original_keys():
  old = jax.random.split(jax.random.key(3), 3)
  new = state_lib.run_keys(3)
  for name, key in zip(("init", "shuffle", "dropout"), old):
    assert np.array_equal(jax.random.key_data(new[name]), jax.random.key_data(key))
  assert not np.array_equal(jax.random.key_data(new["augment"]),
                            jax.random.key_data(new["dropout"]))


def test_batch_norm_stats_update_in_training_and_are_used_in_evaluation():
  state = state_lib.create_train_state(make_config(), jax.random.key(0), 10)
  assert state.batch_stats, "the BN model must have batch statistics"
  split = noise_split(50, 0)
  state1, _ = jax.jit(steps_lib.train_step)(state, batch_of(split), jax.random.key(1))
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), state.batch_stats,
                       state1.batch_stats)
  assert all(jax.tree.leaves(moved))
  # Evaluation applies the running statistics: other statistics, other logits.
  batch = {"image": split.images, "label": split.labels, "mask": np.ones(50, np.float32)}
  ours = eval_lib.eval_step(state1.apply_fn, state1.params, batch, state1.batch_stats)
  logits = state1.apply_fn({"params": state1.params, "batch_stats": state1.batch_stats},
                           data.scale_pixels(split.images), train=False)
  assert float(ours["correct"]) == float(np.sum(np.argmax(logits, -1) == split.labels))
  other = eval_lib.eval_step(state1.apply_fn, state1.params, batch, state.batch_stats)
  assert float(other["loss_sum"]) != pytest.approx(float(ours["loss_sum"]))


def test_models_without_batch_norm_have_empty_stats_and_unchanged_checkpoints():
  state = state_lib.create_train_state(mlp_config.get_config(), jax.random.key(0), 10)
  assert state.batch_stats == {} and state.ema_params is None
  assert set(checkpoint.state_item(state)) == {"params", "opt_state", "step"}


def test_ema_follows_the_closed_form_and_evaluation_uses_it():
  d = 0.75
  config = mlp_config.get_config()
  config.ema_decay = d
  state = state_lib.create_train_state(config, jax.random.key(0), 10)
  history = [state.params]
  step = jax.jit(steps_lib.train_step)
  split = noise_split(40, 1)
  for _ in range(3):
    state, _ = step(state, batch_of(split), jax.random.key(0))
    history.append(state.params)
  # ema_3 = d^3 p0 + (1 - d) (d^2 p1 + d p2 + p3)
  expected = jax.tree.map(
      lambda p0, p1, p2, p3: d**3 * p0 + (1 - d) * (d**2 * p1 + d * p2 + p3), *history)
  for got, want in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with_ema = eval_lib.evaluate(state, split, 20)
  as_params = eval_lib.evaluate(state.replace(params=state.ema_params, ema_params=None),
                             split, 20)
  raw = eval_lib.evaluate(state.replace(ema_params=None), split, 20)
  assert with_ema == as_params
  assert with_ema["loss"] != pytest.approx(raw["loss"])


def _aug_config(**values):
  aug = config_lib.base_config().augment
  aug.update(values)
  return aug


def test_augmentation_off_is_the_plain_step_and_on_is_seeded_per_step():
  state = state_lib.create_train_state(mlp_config.get_config(), jax.random.key(0), 10)
  batch = batch_of(noise_split(20, 2))

  def loss(s, aug_rng=None, augment=None):
    step = jax.jit(functools.partial(steps_lib.train_step, augment=augment))
    return float(step(s, batch, jax.random.key(1), aug_rng=aug_rng)[1]["loss_sum"])

  plain = loss(state)
  off = _aug_config(enabled=False, translate_frac=0.2)
  on = _aug_config(enabled=True, translate_frac=0.2)
  key = jax.random.key(5)
  assert loss(state, aug_rng=key, augment=off) == plain
  shifted = loss(state, aug_rng=key, augment=on)
  assert shifted != plain
  assert loss(state, aug_rng=key, augment=on) == shifted  # same key, same images
  assert loss(state, aug_rng=jax.random.key(6), augment=on) != shifted
  later = state.replace(step=state.step + 1)  # the key is folded with the step
  assert loss(later, aug_rng=key, augment=on) != shifted


@pytest.mark.parametrize("key,value", [
    ("augment.rotation_deg", -1.0), ("augment.translate_frac", 1.0),
    ("augment.scale_min", 0.0), ("augment.elastic_sigma", 0.0),
    ("augment.elastic_alpha", -2.0), ("ema_decay", 1.0), ("select", "best_test"),
    ("data.validation_size", -5)])
def test_impossible_settings_are_rejected(key, value):
  with pytest.raises(UserError, match=key.split(".")[-1]):
    config_lib.validate(make_config(**{key: value}))


def test_bn_ema_augmented_run_restores_and_resumes_bitwise(tmp_path):
  """A run with batch norm, EMA and augmentation: its checkpoint restores the
  statistics and the average, and a run cut back to a mid-epoch checkpoint
  resumes to the same bits."""
  config = make_config(**{"ema_decay": 0.9, "augment.enabled": True,
                          "augment.translate_frac": 0.1})
  splits = (noise_split(200, 3), noise_split(50, 4))
  full = str(tmp_path / "full")
  final = train_and_evaluate(config, full, data=splits, verbose=False)
  restored = restore_lib.restore_state(full, config)
  fresh = state_lib.create_train_state(config, jax.random.key(0), 10)
  assert jax.tree.structure(restored.batch_stats) == jax.tree.structure(
      fresh.batch_stats)
  assert restored.ema_params is not None
  assert eval_lib.evaluate(restored, splits[1], 50)["accuracy"] == final["test_accuracy"]

  cut = str(tmp_path / "cut")
  train_and_evaluate(config, cut, data=splits, verbose=False)
  steps = sorted(checkpoint.manager(cut).all_steps())
  for step in steps[-2:]:  # back to a mid-epoch-2 checkpoint
    shutil.rmtree(os.path.join(run_dir.checkpoint_dir(cut), str(step)))
  assert checkpoint.manager(cut).latest_step() % 10 != 0
  train_and_evaluate(config, cut, data=splits, verbose=False)
  assert (without_times(run_dir.read_metrics(cut))
          == without_times(run_dir.read_metrics(full)))
  again = restore_lib.restore_state(cut, config)
  for field in ("params", "batch_stats", "ema_params", "opt_state"):
    assert_same_bits(mesh_lib.to_host(getattr(again, field)),
                     mesh_lib.to_host(getattr(restored, field)))


@pytest.mark.parametrize("key", ["num_epochs", "batch_size", "eval_batch_size",
                                 "steps_per_dispatch"])
def test_counts_below_one_are_rejected_naming_the_key(key):
  config = mlp_config.get_config()
  config[key] = 0
  with pytest.raises(UserError, match=f"config.{key} = 0: it must be at least 1"):
    config_lib.validate(config)
