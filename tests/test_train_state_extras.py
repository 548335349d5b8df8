"""Batch norm statistics, the EMA of the weights and augmentation in the train step.

A throwaway batch norm model is registered here (the real ones, M3/M5/M7,
live in the model registry); data is seeded noise, so nothing needs MNIST.
"""

import functools
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.core import config as config_lib, data, models, run_dir
from mnist_jax.engine import evaluate as eval_lib, mesh as mesh_lib, restore as restore_lib, state as state_lib, steps as steps_lib
from mnist_jax.engine.loop import train_and_evaluate
from mnist_jax.inference import trained

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
  models.register(BN_MODEL)(TinyBN)


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
  assert float(ours["accuracy"]) == float(np.sum(np.argmax(logits, -1) == split.labels))
  other = eval_lib.eval_step(state1.apply_fn, state1.params, batch, state.batch_stats)
  assert float(other["loss"]) != pytest.approx(float(ours["loss"]))


def test_models_without_batch_norm_have_empty_stats_and_unchanged_checkpoints():
  state = state_lib.create_train_state(mlp_config.get_config(), jax.random.key(0), 10)
  assert state.batch_stats == {} and state.ema_params is None
  assert set(checkpoint.state_item(state)) == {"params", "opt_state", "step"}


@pytest.mark.parametrize("decay,step,expected", [
    (0.999, 1, 2 / 11), (0.999, 2, 3 / 12), (0.999, 100, 101 / 110),
    (0.999, 8989, 8990 / 8999), (0.999, 8990, 0.999), (0.999, 50_000, 0.999),
    (0.5, 7, 8 / 17), (0.5, 8, 0.5), (0.5, 9, 0.5)])
def test_ema_decay_warms_up_as_tensorflow_s_num_updates(decay, step, expected):
  got = steps_lib.ema_decay_at(decay, jnp.asarray(step, jnp.int32))
  assert float(got) == pytest.approx(expected, rel=1e-6)


def _moving_average(history, decay):
  """ema_0 = x_0; ema_t = d_t ema_{t-1} + (1 - d_t) x_t, d_t = min(decay, (1+t)/(10+t)),
  in float64."""
  ema = jax.tree.map(np.float64, history[0])
  for t, x in enumerate(history[1:], start=1):
    d_t = min(decay, (1 + t) / (10 + t))
    ema = jax.tree.map(lambda e, p: d_t * e + (1 - d_t) * np.float64(p), ema, x)
  return ema


def _assert_close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_ema_follows_the_closed_form_and_evaluation_uses_it():
  d = 0.25  # step 1 decays by the warm-up's 2/11, steps 2 and 3 by d
  config = mlp_config.get_config()
  config.ema_decay = d
  state = state_lib.create_train_state(config, jax.random.key(0), 10)
  history = [state.params]
  step = jax.jit(steps_lib.train_step)
  split = noise_split(40, 1)
  for _ in range(3):
    state, _ = step(state, batch_of(split), jax.random.key(0))
    history.append(state.params)
  _assert_close(state.ema_params, _moving_average(history, d))
  with_ema = eval_lib.evaluate(state, split, 20)
  as_params = eval_lib.evaluate(state.replace(params=state.ema_params, ema_params=None),
                             split, 20)
  raw = eval_lib.evaluate(state.replace(ema_params=None), split, 20)
  assert with_ema == as_params
  assert with_ema["loss"] != pytest.approx(raw["loss"])


def test_batch_stats_are_averaged_with_the_weights_and_evaluated_with_them():
  """The EMA keeps its own batch statistics, averaged as the weights are, and
  evaluation pairs them with the averaged weights: live statistics that are
  garbage change nothing."""
  d = 0.5
  state = state_lib.create_train_state(make_config(ema_decay=d), jax.random.key(0), 10)
  split = noise_split(60, 5)
  step = jax.jit(steps_lib.train_step)
  history = [state.batch_stats]
  for i in range(3):
    state, _ = step(state, batch_of(noise_split(20, 10 + i)), jax.random.key(1))
    history.append(state.batch_stats)
  _assert_close(state.ema_batch_stats, _moving_average(history, d))
  garbage = state.replace(batch_stats=jax.tree.map(lambda s: s * 0 + 1e6, state.batch_stats))
  params, stats = state_lib.eval_variables(garbage)
  assert params is state.ema_params and stats is state.ema_batch_stats
  as_live = state.replace(params=state.ema_params, batch_stats=state.ema_batch_stats,
                          ema_params=None, ema_batch_stats={})
  assert (eval_lib.evaluate(garbage, split, 20) == eval_lib.evaluate(as_live, split, 20)
          == eval_lib.evaluate(state, split, 20))
  # Without EMA, the live ones: the garbage shows.
  no_ema = garbage.replace(ema_params=None, ema_batch_stats={})
  params, stats = state_lib.eval_variables(no_ema)
  assert params is no_ema.params and stats is no_ema.batch_stats
  assert (eval_lib.evaluate(no_ema, split, 20)["loss"]
          != pytest.approx(eval_lib.evaluate(as_live, split, 20)["loss"]))


def _aug_config(**values):
  aug = config_lib.base_config().augment
  aug.update(values)
  return aug


def test_augmentation_off_is_the_plain_step_and_on_is_seeded_per_step():
  state = state_lib.create_train_state(mlp_config.get_config(), jax.random.key(0), 10)
  batch = batch_of(noise_split(20, 2))

  def loss(s, aug_rng=None, augment=None):
    step = jax.jit(functools.partial(steps_lib.train_step, augment=augment))
    return float(step(s, batch, jax.random.key(1), aug_rng=aug_rng)[1]["loss"])

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
  assert jax.tree.structure(restored.ema_batch_stats) == jax.tree.structure(
      fresh.batch_stats)
  assert eval_lib.evaluate(restored, splits[1], 50)["accuracy"] == final["test_accuracy"]
  model = trained.load(full)  # predict, ensemble and figures: the EMA's pair
  assert_same_bits((model.params, model.batch_stats), mesh_lib.to_host(
      (restored.ema_params, restored.ema_batch_stats)))

  cut = str(shutil.copytree(full, tmp_path / "cut"))  # the same run, then cut back
  steps = sorted(checkpoint.manager(cut).all_steps())
  for step in steps[-2:]:  # back to a mid-epoch-2 checkpoint
    shutil.rmtree(os.path.join(run_dir.checkpoint_dir(cut), str(step)))
  assert checkpoint.manager(cut).latest_step() % 10 != 0
  train_and_evaluate(config, cut, data=splits, verbose=False)
  assert (without_times(run_dir.read_metrics(cut))
          == without_times(run_dir.read_metrics(full)))
  again = restore_lib.restore_state(cut, config)
  for field in ("params", "batch_stats", "ema_params", "ema_batch_stats", "opt_state"):
    assert_same_bits(mesh_lib.to_host(getattr(again, field)),
                     mesh_lib.to_host(getattr(restored, field)))


def test_an_ema_checkpoint_from_before_its_own_stats_evaluates_as_it_was_measured(
    tmp_path, monkeypatch):
  """A checkpoint of an EMA run saved before the EMA kept batch statistics
  (commit 5ccd3f5 and earlier: no `ema_batch_stats`) restores with a copy of
  the live statistics in their place, so it evaluates as it was measured
  then (averaged weights, live statistics); resumed, it trains to the end and
  saves the new field."""
  config = make_config(ema_decay=0.9)
  splits = (noise_split(200, 3), noise_split(50, 4))
  old = str(tmp_path / "old")
  with monkeypatch.context() as patch:  # the layout of those checkpoints
    patch.setattr(checkpoint, "OPTIONAL_FIELDS", ("batch_stats", "ema_params"))
    train_and_evaluate(config, old, data=splits, verbose=False)
  restored = restore_lib.restore_state(old, config)
  assert restored.ema_batch_stats
  assert_same_bits(mesh_lib.to_host(restored.ema_batch_stats),
                   mesh_lib.to_host(restored.batch_stats))
  as_then = restored.replace(params=restored.ema_params, ema_params=None,
                             ema_batch_stats={})
  assert (eval_lib.evaluate(restored, splits[1], 50)
          == eval_lib.evaluate(as_then, splits[1], 50))

  mngr = checkpoint.manager(old)
  for step in sorted(mngr.all_steps())[-2:]:  # back to a mid-epoch-2 checkpoint
    shutil.rmtree(os.path.join(run_dir.checkpoint_dir(old), str(step)))
  train_and_evaluate(config, old, data=splits, verbose=False)
  assert [m["epoch"] for m in run_dir.read_metrics(old)] == [1, 2]
  mngr = checkpoint.manager(old)
  assert "ema_batch_stats" in mngr.item_metadata(mngr.latest_step())["state"].keys()


@pytest.mark.parametrize("key", ["num_epochs", "batch_size", "eval_batch_size",
                                 "steps_per_dispatch"])
def test_counts_below_one_are_rejected_naming_the_key(key):
  config = mlp_config.get_config()
  config[key] = 0
  with pytest.raises(UserError, match=f"config.{key} = 0: it must be at least 1"):
    config_lib.validate(config)
