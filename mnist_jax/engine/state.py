"""The train state and what a run derives from its config and seed."""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import struct
from flax.training import train_state

from mnist_jax.core import data as data_lib, runtime
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.optim import make_optimizer, make_schedule


class TrainState(train_state.TrainState):
  """params, opt_state and step (flax's TrainState); apply_fn and tx are static.

  batch_stats: batch norm running statistics ({} for models without batch norm).
  ema_params: moving average of params, used for evaluation (None when off);
  ema_batch_stats: the same moving average of batch_stats ({} without EMA or
  without batch norm), evaluated with ema_params; ema_decay (static) is the
  average's decay (engine/steps.ema_decay_at).
  """
  batch_stats: Any = struct.field(default_factory=dict)
  ema_params: Any = None
  ema_batch_stats: Any = struct.field(default_factory=dict)
  ema_decay: float = struct.field(pytree_node=False, default=0.0)


def eval_variables(state: TrainState) -> Tuple[Any, Any]:
  """(params, batch_stats) that evaluation uses: the moving averages of both
  when the run keeps them, else the live ones, never one of each. The only
  place that chooses (the evaluator, TrainedModel, the TensorBoard grid): the
  averaged weights with the live weights' statistics read 10-15% test
  accuracy in configs/frontier_cpu.py's first epochs."""
  if state.ema_params is None:
    return state.params, state.batch_stats
  return state.ema_params, state.ema_batch_stats


def run_keys(seed: int) -> Dict[str, jax.Array]:
  """The named keys a run derives from its seed.

  split(key, 4)'s first three keys equal split(key, 3)'s (tested), so the
  init, shuffle and dropout keys are the ones runs had before 'augment' existed.
  """
  names = ("init", "shuffle", "dropout", "augment")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


def variables(params, batch_stats=None) -> Dict:
  """The variables for `apply`: batch_stats only for models that have them."""
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {
      "params": params}


def create_train_state(config: ml_collections.ConfigDict, init_rng: jax.Array,
                       steps_per_epoch: int) -> TrainState:
  """Fresh parameters and optimiser state for `config`."""
  model = build_model(config.model)
  dummy = jnp.zeros((1,) + data_lib.IMAGE_SHAPE, jnp.float32)
  init = model.init(init_rng, dummy, train=False)
  params = init["params"]
  schedule = make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = make_optimizer(config.optimizer, schedule)
  batch_stats = init.get("batch_stats", {})
  ema_decay = float(config.ema_decay)
  # Copies, not the same arrays: the step donates the state's buffers.
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           batch_stats=batch_stats,
                           ema_params=copy(params) if ema_decay > 0 else None,
                           ema_batch_stats=copy(batch_stats) if ema_decay > 0 else {},
                           ema_decay=ema_decay)


def check_fits_in_memory(config: ml_collections.ConfigDict, copies: int = 1) -> None:
  """Refuses a model whose training state cannot fit in memory, before XLA is
  asked to allocate it (it aborts the process). Counted from the state's
  shapes alone (jax.eval_shape: nothing is allocated): parameters, optimizer
  state and moving averages, plus the gradients, once per seed trained
  together (`copies`) and, on the CPU, once per device (each holds a replica
  in the host's memory)."""
  state = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0), 1))
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
  per_device = jax.local_device_count() if jax.devices()[0].platform == "cpu" else 1
  need = (nbytes(state) + nbytes(state.params)) * copies * per_device
  have = runtime.device_memory_bytes()
  if need > have:
    params = sum(x.size for x in jax.tree.leaves(state.params))
    raise UserError(f"model {config.model.name}: {params:,} parameters need about "
                    f"{need / 2**30:,.1f} GiB to train (parameters, optimizer state "
                    f"and gradients) and {jax.devices()[0].platform} has "
                    f"{have / 2**30:,.1f} GiB: make config.model smaller.")


def stack(trees: Sequence[Any]):
  """Trees of equal structure stacked along a new leading axis (one entry each)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i: int):
  """Entry `i` of a stacked tree."""
  return jax.tree.map(lambda x: x[i], tree)


def stack_states(states: Sequence[TrainState]) -> TrainState:
  """Train states stacked along a leading axis, one per seed.

  apply_fn and tx are static and equal in function across seeds (one config):
  the first state's are kept (optax's closures would not compare equal).
  """
  fields = ("step", "params", "opt_state", "batch_stats", "ema_params", "ema_batch_stats")
  return states[0].replace(**{f: stack([getattr(s, f) for s in states]) for f in fields})


def step_options(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config's settings that `train_step` takes besides state, batch, keys."""
  return {"label_smoothing": config.label_smoothing,
          "augment": config.augment}


def steps_per_epoch(config: ml_collections.ConfigDict, num_train: int) -> int:
  steps = num_train // config.batch_size
  if steps < 1:
    raise UserError(
        f"config.batch_size = {config.batch_size} is larger than the "
        f"{num_train} training images: use a smaller batch size.")
  return steps
