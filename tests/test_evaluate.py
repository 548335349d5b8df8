"""The one evaluator: compiled once per model, stacked states, probabilities."""

import jax
import numpy as np
import pytest

from mnist_jax.core import data
from mnist_jax.engine import evaluate as eval_lib, state as state_lib

from configs import mlp as mlp_config


def noise_split(n, seed=0):
  rng = np.random.default_rng(seed)
  return data.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                    (np.arange(n) % 10).astype(np.int32))


def fresh_state(seed):
  return state_lib.create_train_state(mlp_config.get_config(), jax.random.key(seed), 10)


def test_one_compilation_per_model_whatever_the_state_or_images():
  """Separately built states of one config share the compiled evaluator."""
  eval_lib.evaluate(fresh_state(0), noise_split(30), 10)  # compiles if not yet
  before = eval_lib._jitted_eval_batch._cache_size()
  for seed in (1, 2):
    eval_lib.evaluate(fresh_state(seed), noise_split(30, seed), 10)
  assert eval_lib._jitted_eval_batch._cache_size() == before


def test_stacked_states_evaluate_like_each_state_alone():
  states = [fresh_state(seed) for seed in (0, 1, 2)]
  split = noise_split(25)  # 10 + 10 + 5 (padded)
  stacked = eval_lib.split_sums(state_lib.stack_states(states), split, 10, stacked=True)
  assert stacked["count"].tolist() == [25.0] * 3
  for i, state in enumerate(states):
    alone = eval_lib.split_sums(state, split, 10)
    for key in ("loss", "accuracy"):
      assert stacked[key][i] == pytest.approx(alone[key], rel=1e-6), key
  assert len({float(x) for x in stacked["loss"]}) == 3  # three different models


def test_probabilities_are_the_softmax_of_each_image_padding_dropped():
  state = fresh_state(0)
  images = noise_split(7).images
  probs = eval_lib.probabilities(state.apply_fn, state.params, state.batch_stats,
                                 images, batch_size=3)
  logits = state.apply_fn({"params": state.params}, data.scale_pixels(images))
  np.testing.assert_allclose(probs, jax.nn.softmax(logits), rtol=1e-5, atol=1e-7)
