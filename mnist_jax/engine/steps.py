"""Pure training steps: (state, sums, batch, keys) -> (state, sums), jitted by the loop.

The train step is a pure function (state, batch, rng) -> (state, metrics).
`config.steps_per_dispatch` = K > 1 runs K steps per call, as a scan over K
batches' indices: for a model whose step is about a millisecond (the MLP) the
host's per-call work is then paid once per K steps (docs/performance.md).
On XLA:CPU a whole epoch in one scan runs 7x slower for a CNN than separate
calls (docs/decisions.md), so the loop calls these per span, not per epoch.
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mnist_jax.core import augment as augment_lib
from mnist_jax.core import data as data_lib
from mnist_jax.engine.state import TrainState, step_options

Batch = Dict[str, jax.Array]


def cross_entropy(logits_BxC: jax.Array, labels_B: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy (softmax turns scores into probabilities)."""
  if label_smoothing == 0.0:
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
  targets = optax.smooth_labels(
      jax.nn.one_hot(labels_B, logits_BxC.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits_BxC, targets)


def _forward(state: TrainState, params, images, dropout_rng):
  """Training-mode logits and the updated batch norm statistics (if any)."""
  rngs = {"dropout": dropout_rng}
  if not state.batch_stats:
    return state.apply_fn({"params": params}, images, train=True, rngs=rngs), {}
  logits, updates = state.apply_fn(
      {"params": params, "batch_stats": state.batch_stats}, images, train=True,
      rngs=rngs, mutable=["batch_stats"])
  return logits, updates["batch_stats"]


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The average's decay at its update after optimizer step `step` (1, 2, ...):
  min(decay, (1 + step) / (10 + step)), the warm-up of TensorFlow's
  ExponentialMovingAverage(num_updates=step). Without it an average started
  from the random initial weights still holds decay^t of them after t steps
  (0.999^936 = 39% after frontier_cpu's first two epochs); with it the
  average follows the weights closely at first and reaches `decay` at step
  (10 decay - 1) / (1 - decay) (8,990 for 0.999: frontier_cpu's 18 epochs of
  468 steps end at 0.99893). optax has no such schedule (optax.ema's `debias`
  rescales an average started at zero; it would still weigh every step since
  the first alike until about 1 / (1 - decay) steps)."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(state: TrainState) -> TrainState:
  """The moving averages of the weights and of the batch statistics (as timm's
  ModelEmaV2 averages a model's buffers), after the optimizer's update."""
  step_size = 1.0 - ema_decay_at(state.ema_decay, state.step)
  average = lambda new, old: optax.incremental_update(new, old, step_size)
  return state.replace(ema_params=average(state.params, state.ema_params),
                       ema_batch_stats=average(state.batch_stats, state.ema_batch_stats))


def train_step(state: TrainState, batch: Batch, rng: jax.Array,
               label_smoothing: float = 0.0,
               aug_rng: Optional[jax.Array] = None,
               augment: Optional[ml_collections.ConfigDict] = None
               ) -> Tuple[TrainState, Dict]:
  """One optimiser update on `batch`; metrics are sums, not means.

  `rng` is the run's dropout key and `aug_rng` its augmentation key (needed
  when `augment.enabled`); both are folded with the step number here.
  """
  images = data_lib.scale_pixels(batch["image"])
  if augment is not None and augment.enabled:
    images = augment_lib.augment_batch(jax.random.fold_in(aug_rng, state.step),
                                       images, augment)
  labels = batch["label"]
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, batch_stats = _forward(state, params, images, dropout_rng)
    return cross_entropy(logits, labels, label_smoothing).mean(), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema_params is not None:
    state = ema_update(state)
  metrics = {
      "loss_sum": loss * labels.shape[0],
      "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
      "count": jnp.asarray(labels.shape[0], jnp.int32),
  }
  return state, metrics


def zero_sums() -> Dict[str, jax.Array]:
  """An epoch's running train sums before its first step."""
  return {"loss_sum": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.int32),
          "count": jnp.zeros((), jnp.int32),
          "first_bad_step": jnp.full((), -1, jnp.int32)}


def accumulate_step(state: TrainState, sums: Dict, batch: Batch, rng: jax.Array,
                    aug_rng: jax.Array, **step_options) -> Tuple[TrainState, Dict]:
  """`train_step`, adding its metrics to the epoch's running sums on device.

  Summing on device, in step order, needs no host sync per step and gives the
  same bits whether or not the epoch was interrupted (the sums are
  checkpointed). `first_bad_step` is the first step whose loss was NaN or inf
  (-1: none), read at the next checkpoint.
  """
  state, metrics = train_step(state, batch, rng, aug_rng=aug_rng, **step_options)
  bad = ~jnp.isfinite(metrics["loss_sum"]) & (sums["first_bad_step"] < 0)
  return state, {
      "loss_sum": sums["loss_sum"] + metrics["loss_sum"],
      "correct": sums["correct"] + metrics["correct"],
      "count": sums["count"] + metrics["count"],
      "first_bad_step": jnp.where(bad, state.step.astype(jnp.int32),
                                  sums["first_bad_step"]),
  }


def gather_step(state: TrainState, sums: Dict, train_data: Batch, idx_B: jax.Array,
                rng: jax.Array, aug_rng: jax.Array, **step_options
                ) -> Tuple[TrainState, Dict]:
  """`accumulate_step` on the batch `train_data[idx_B]`, gathered on the device.

  The training set is put on the device once per run, so a step sends only
  its indices: no host gather and no image transfer per step, host work that
  at the MLP's ~1 ms per step competes with XLA for the same cores
  (docs/performance.md).
  """
  batch = {"image": train_data["image"][idx_B], "label": train_data["label"][idx_B]}
  return accumulate_step(state, sums, batch, rng, aug_rng, **step_options)


def gather_steps(state: TrainState, sums: Dict, train_data: Batch,
                 idx_KxB: jax.Array, rng: jax.Array, aug_rng: jax.Array,
                 **step_options) -> Tuple[TrainState, Dict]:
  """K `gather_step`s in one call, in order, on the batches idx_KxB[0..K-1].

  The same steps as K calls of `gather_step` (each folds its keys with the
  step number it reaches), as a lax.scan so the host dispatches once.
  """
  def one_step(carry, idx_B):
    return gather_step(*carry, train_data, idx_B, rng, aug_rng, **step_options), None

  (state, sums), _ = jax.lax.scan(one_step, (state, sums), idx_KxB)
  return state, sums


def train_program(config: ml_collections.ConfigDict, stacked: bool = False,
                  steps_per_call: Optional[int] = None):
  """The training loop's call, jitted with the state and sums donated:
  fn(state, sums, train_data, idx, rng, aug_rng).

  K = steps_per_call (default config.steps_per_dispatch) steps per call:
  `gather_step` on idx_B when K = 1, `gather_steps` on idx_KxB otherwise.
  `stacked`: the same function under jax.vmap over states, sums, indices and
  keys stacked along a leading axis (one entry per seed), the training set
  shared: several seeds in one compiled program.
  """
  k = config.steps_per_dispatch if steps_per_call is None else steps_per_call
  fn = functools.partial(gather_step if k == 1 else gather_steps, **step_options(config))
  if stacked:
    fn = jax.vmap(fn, in_axes=(0, 0, None, 0, 0, 0))
  return jax.jit(fn, donate_argnums=(0, 1))


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# Per seed of states stacked along a leading axis (a group of seeds, engine/loop.py).
all_finite_per_seed = jax.jit(jax.vmap(all_finite))


def dispatch_spans(first_batch: int, steps: int, k: int):
  """(start, stop) batch ranges covering first_batch..steps-1, one per call.

  Each ends at the next multiple of k (or the epoch's end), so a resumed run,
  which may start mid-span, falls back into the same spans as an unbroken one.
  """
  start = first_batch
  while start < steps:
    stop = min((start // k + 1) * k, steps)
    yield start, stop
    start = stop


def span_indices(order_xN: np.ndarray, start: int, stop: int, batch: int) -> np.ndarray:
  """Batches start..stop-1 of an epoch's order (its last axis) as (..., K, batch)."""
  span = order_xN[..., start * batch:stop * batch]
  return span.reshape(span.shape[:-1] + (stop - start, batch))
