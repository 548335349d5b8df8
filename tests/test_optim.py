"""Learning-rate schedules and Adam's steps against values worked out by hand."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mnist_jax import UserError
from mnist_jax.core.config import base_config, validate
from mnist_jax.core.optim import make_optimizer, make_schedule


def optimizer(**values) -> ml_collections.ConfigDict:
  cfg = base_config().optimizer
  cfg.update(values)
  return cfg


def rates(schedule, steps):
  return [float(schedule(t)) for t in steps]


def test_cosine_with_a_warm_up_epoch():
  # 10 steps per epoch, 5 epochs: 50 steps. Warm-up: linear from 0 to the peak
  # (1.0) over the first 10; then 0.5 (1 + cos(pi (t - 10) / 40)), 0 at step 50.
  schedule = make_schedule(optimizer(schedule="cosine", learning_rate=1.0,
                                     warmup_epochs=1.0), 10, 5)
  assert rates(schedule, [0, 5, 10, 20, 30, 50]) == pytest.approx(
      [0.0, 0.5, 1.0, 0.5 + np.sqrt(2) / 4, 0.5, 0.0], abs=1e-6)


def test_cosine_without_warm_up_starts_at_the_peak():
  schedule = make_schedule(optimizer(schedule="cosine", learning_rate=2.0), 10, 5)
  assert rates(schedule, [0, 25, 50]) == pytest.approx([2.0, 1.0, 0.0], abs=1e-6)


def test_one_cycle():
  # Peak 1.0 over 100 steps: from peak / 25 up to the peak at 30% of the run
  # (step 30) along half a cosine, then down along half a cosine to
  # peak / (25 * 10^4) at the end; half-way up and down, the means of the ends.
  schedule = make_schedule(optimizer(schedule="onecycle", learning_rate=1.0), 20, 5)
  assert rates(schedule, [0, 15, 30, 65, 100]) == pytest.approx(
      [0.04, 0.52, 1.0, (1.0 + 4e-6) / 2, 4e-6], rel=1e-5)


def test_exponential_decays_once_per_epoch():
  schedule = make_schedule(optimizer(schedule="exponential", learning_rate=1.0,
                                     decay_per_epoch=0.5), 10, 5)
  assert rates(schedule, [0, 9, 10, 19, 20, 45]) == pytest.approx(
      [1.0, 1.0, 0.5, 0.5, 0.25, 0.0625])


def test_a_warm_up_as_long_as_the_run_is_refused():
  with pytest.raises(UserError, match="warmup_epochs = 5.0 is not shorter"):
    make_schedule(optimizer(schedule="cosine", warmup_epochs=5.0), 10, 5)


def adam_by_hand(w, gradients, lr, b1, b2, eps=1e-8):
  """Kingma & Ba's Algorithm 1, written out in numpy."""
  m = v = np.zeros_like(w)
  for t, g in enumerate(gradients, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    w = w - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return w


@pytest.mark.parametrize("name", ["adam", "adamw"])
@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.7, 0.9)])
def test_adam_steps_use_the_configured_decay_rates(name, b1, b2):
  cfg = optimizer(name=name, schedule="constant", learning_rate=0.1, b1=b1, b2=b2)
  tx = make_optimizer(cfg, make_schedule(cfg, 10, 1))
  w = np.array([1.0, -2.0, 0.5])
  gradients = [np.array([0.3, -1.0, 2.0]), np.array([-0.5, 0.2, 1.0]),
               np.array([0.1, 0.1, -3.0])]
  params, state = jnp.asarray(w), tx.init(jnp.asarray(w))
  for g in gradients:
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, adam_by_hand(w, gradients, 0.1, b1, b2), rtol=1e-5)


@pytest.mark.parametrize("beta", ["b1", "b2"])
def test_a_decay_rate_outside_zero_to_one_is_refused(beta):
  config = base_config()
  config.optimizer[beta] = 1.0
  with pytest.raises(UserError, match=rf"config.optimizer.{beta} = 1.0: .*\[0, 1\)"):
    validate(config)
