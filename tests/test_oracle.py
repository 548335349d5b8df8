"""One Adam step of the MLP against an independent oracle: the forward pass,
the loss, the backward pass and Adam's update written out in float64 numpy.

The golden losses of tests/test_train.py pin what the code computed once;
this says that what it computes is the mathematics: flax's layers, optax's
loss and Adam, the pixel scaling and the step's plumbing, each checked
against a line of numpy.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mnist_jax.engine import state as state_lib
from mnist_jax.engine import steps as steps_lib

from configs import mlp as mlp_config
from test_train import fixed_batch


def mlp_loss_and_grads(params, images_BxHxWx1, labels_B):
  """Mean softmax cross-entropy of Flatten -> Dense -> ReLU -> Dense, and its
  gradient, in float64, by the chain rule."""
  w1, b1 = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
  w2, b2 = params["Dense_1"]["kernel"], params["Dense_1"]["bias"]
  x_BxD = images_BxHxWx1.reshape(len(labels_B), -1).astype(np.float64) / 255.0
  pre_BxH = x_BxD @ w1 + b1
  h_BxH = np.maximum(pre_BxH, 0.0)
  z_BxC = h_BxH @ w2 + b2
  z_BxC = z_BxC - z_BxC.max(-1, keepdims=True)
  p_BxC = np.exp(z_BxC) / np.exp(z_BxC).sum(-1, keepdims=True)
  batch = np.arange(len(labels_B))
  loss = -np.log(p_BxC[batch, labels_B]).mean()
  dz_BxC = p_BxC.copy()
  dz_BxC[batch, labels_B] -= 1.0
  dz_BxC /= len(labels_B)  # d(mean loss)/d(logits) = (softmax - one_hot) / B
  dpre_BxH = (dz_BxC @ w2.T) * (pre_BxH > 0)
  grads = {"Dense_0": {"kernel": x_BxD.T @ dpre_BxH, "bias": dpre_BxH.sum(0)},
           "Dense_1": {"kernel": h_BxH.T @ dz_BxC, "bias": dz_BxC.sum(0)}}
  return loss, grads


def adam_first_step(params, grads, lr, b1, b2, eps=1e-8):
  """(params after Adam's first update, its first and second moments)."""
  mu = jax.tree.map(lambda g: (1 - b1) * g, grads)
  nu = jax.tree.map(lambda g: (1 - b2) * g * g, grads)
  new = jax.tree.map(
      lambda p, m, v: p - lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps), params, mu, nu)
  return new, mu, nu


def as_float64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def adam_moments(opt_state):
  """(mu, nu) of optax's Adam state inside the train state's optimiser chain."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: hasattr(s, "nu"))
           if hasattr(s, "nu")]
  assert len(found) == 1, opt_state
  return found[0].mu, found[0].nu


def test_one_adam_step_of_the_mlp_is_the_numpy_oracles():
  config = mlp_config.get_config()
  state = state_lib.create_train_state(config, jax.random.key(0), steps_per_epoch=468)
  batch = fixed_batch()
  params64 = as_float64(state.params)
  loss, grads = mlp_loss_and_grads(params64, batch["image"], batch["label"])
  opt = config.optimizer
  # The cosine schedule (no warm-up) starts at its peak rate.
  assert opt.name == "adam" and opt.schedule == "cosine" and opt.warmup_epochs == 0
  expected, mu, nu = adam_first_step(params64, grads, opt.learning_rate, opt.b1, opt.b2)

  new_state, metrics = jax.jit(steps_lib.train_step)(state, batch, jax.random.key(1))

  assert float(metrics["loss"]) / 32 == pytest.approx(loss, rel=1e-5)
  ours_mu, ours_nu = adam_moments(new_state.opt_state)
  scale = max(np.abs(g).max() for g in jax.tree.leaves(grads))
  for ours, theirs, unit in ((ours_mu, mu, scale), (ours_nu, nu, scale ** 2)):
    jax.tree.map(lambda a, b, u=unit: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                                 atol=1e-6 * u), ours, theirs)
  # An update moves each weight by about the rate (1e-3): agree to 0.1% of it.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6),
               as_float64(new_state.params), expected)
  after, _ = mlp_loss_and_grads(expected, batch["image"], batch["label"])
  assert after < loss  # the step went downhill


def test_the_oracle_sees_a_wrong_gradient():
  """The comparison can fail: a gradient off by 1% in one layer is caught."""
  config = mlp_config.get_config()
  state = state_lib.create_train_state(config, jax.random.key(0), steps_per_epoch=468)
  batch = fixed_batch()
  _, grads = mlp_loss_and_grads(as_float64(state.params), batch["image"], batch["label"])
  new_state, _ = jax.jit(steps_lib.train_step)(state, batch, jax.random.key(1))
  ours_mu, _ = adam_moments(new_state.opt_state)
  wrong = (1 - config.optimizer.b1) * grads["Dense_1"]["kernel"] * 1.01
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(ours_mu["Dense_1"]["kernel"], wrong, rtol=1e-4, atol=1e-9)
