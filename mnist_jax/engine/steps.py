"""Pure training steps: (state, sums, batch, keys) -> (state, sums), jitted by the loop.

The train step is a pure function (state, batch, rng) -> (state, metrics),
`config.train_step` ('module:function', this module's `train_step` by
default), so a variant of the step, with its own measurements, is a config
change (docs/extending.md).
`config.steps_per_dispatch` = K > 1 runs K steps per call, as a scan over K
batches' indices: for a model whose step is about a millisecond (the MLP) the
host's per-call work is then paid once per K steps (docs/performance.md).
On XLA:CPU a whole epoch in one scan runs 7x slower for a CNN than separate
calls (docs/decisions.md), so the loop calls these per span, not per epoch.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mnist_jax.core import augment as augment_lib
from mnist_jax.core import data as data_lib
from mnist_jax.core import user_code
from mnist_jax.core.errors import UserError
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
  """One optimiser update on `batch`, and its measurements.

  Each measurement is a sum over the batch's examples, with `count` the
  number of examples: the loop adds every key over the epoch and writes
  train_<key> = sum / count (loss: the mean loss; accuracy: the fraction
  correct). A key added here is written to metrics.jsonl, TensorBoard and
  the epoch line with nothing else to edit (docs/extending.md).

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
      "loss": loss * labels.shape[0],
      "accuracy": jnp.sum(jnp.argmax(logits, -1) == labels),
      "count": jnp.asarray(labels.shape[0], jnp.int32),
  }
  return state, metrics


def load_train_step(name: str) -> Callable:
  """config.train_step's function, named 'module:function' (the module
  importable from the working directory, or installed)."""
  module_name, _, function_name = name.partition(":")
  try:
    function = getattr(user_code.import_from_working_directory(module_name), function_name)
  except (ImportError, AttributeError, ValueError) as e:
    raise UserError(f"config.train_step = {name!r} cannot be loaded ({e}): name a "
                    "function as 'module:function', its module importable from the "
                    "working directory, e.g. 'my_steps:train_step'.") from None
  if not callable(function):
    raise UserError(f"config.train_step = {name!r} is not a function: name one as "
                    "'module:function'.")
  return function


def make_train_step(config: ml_collections.ConfigDict) -> Callable:
  """config.train_step with the config's options bound:
  fn(state, batch, rng, aug_rng=...) -> (state, measurements)."""
  return functools.partial(load_train_step(config.train_step), **step_options(config))


def zero_sums(train_step: Callable, state: TrainState, batch_size: int,
              train_data: Batch) -> Dict[str, jax.Array]:
  """An epoch's running sums before its first step: a zero of each measurement
  `train_step` (make_train_step's) returns, shaped by tracing it alone, and
  `first_bad_step` = -1 (no NaN or inf loss yet)."""
  batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype)
           for k, v in train_data.items()}
  key = jax.random.key(0)
  _, measured = jax.eval_shape(lambda s, b: train_step(s, b, key, aug_rng=key), state, batch)
  sums = {k: jnp.zeros(v.shape, v.dtype) for k, v in measured.items()}
  return dict(sums, first_bad_step=jnp.full((), -1, jnp.int32))


def _step_and_add(train_step: Callable, train_data: Batch, rng: jax.Array,
                  aug_rng: jax.Array, carry: Tuple[TrainState, Dict], idx_B: jax.Array):
  """`train_step` on the batch train_data[idx_B], its measurements added to
  the epoch's running sums: ((state, sums), None), a lax.scan body.

  The training set is put on the device once per run, so a step sends only
  its indices: no host gather and no image transfer per step, host work that
  at the MLP's ~1 ms per step competes with XLA for the same cores
  (docs/performance.md). Summing on device, in step order, needs no host sync
  per step and gives the same bits whether or not the epoch was interrupted
  (the sums are checkpointed). `first_bad_step` is the first step whose loss
  was NaN or inf (-1: none), read at the next checkpoint.
  """
  state, sums = carry
  batch = {"image": train_data["image"][idx_B], "label": train_data["label"][idx_B]}
  state, measured = train_step(state, batch, rng, aug_rng=aug_rng)
  bad = ~jnp.isfinite(measured["loss"]) & (sums["first_bad_step"] < 0)
  added = {k: sums[k] + measured[k] for k in measured}
  added["first_bad_step"] = jnp.where(bad, state.step.astype(jnp.int32),
                                      sums["first_bad_step"])
  return (state, added), None


def train_program(config: ml_collections.ConfigDict, stacked: bool = False,
                  steps_per_call: Optional[int] = None):
  """The training loop's call, jitted with the state and sums donated:
  fn(state, sums, train_data, idx, rng, aug_rng) -> (state, sums).

  K = steps_per_call (default config.steps_per_dispatch) steps per call: one
  step on the batch idx_B when K = 1; K steps in order on the batches idx_KxB
  as a lax.scan otherwise (each folds its keys with the step number it
  reaches, so the same steps as K calls), dispatched by the host once.
  `stacked`: the same function under jax.vmap over states, sums, indices and
  keys stacked along a leading axis (one entry per seed), the training set
  shared: several seeds in one compiled program.
  """
  k = config.steps_per_dispatch if steps_per_call is None else steps_per_call
  train_step = make_train_step(config)

  def program(state, sums, train_data, idx, rng, aug_rng):
    step = functools.partial(_step_and_add, train_step, train_data, rng, aug_rng)
    if k == 1:
      return step((state, sums), idx)[0]
    return jax.lax.scan(step, (state, sums), idx)[0]

  if stacked:
    program = jax.vmap(program, in_axes=(0, 0, None, 0, 0, 0))
  return jax.jit(program, donate_argnums=(0, 1))


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
