"""Several seeds of one config trained in one compiled program (`jax.vmap`).

`train_seeds(config, seeds, workdirs)` stacks one train state per seed along a
leading axis and vmaps `steps_lib.gather_steps` / `eval_lib.eval_step` over it: each
step is one program over all seeds, so small models keep the cores busy that
a single seed leaves idle. As in `train_and_evaluate`, the training set is
put on the device once and each call sends only batch indices (K =
config.steps_per_dispatch steps per call). Each seed keeps its own init, data
order and dropout (and augmentation) keys, derived from its seed exactly as
in `train_and_evaluate`, so a
seed's result equals its separate run up to float rounding, and each seed's
run directory (config.json with its seed, metrics.jsonl, checkpoints) is what
`train_and_evaluate` would have written. Batch norm statistics and the
moving average of the weights are stacked like the parameters. A validation
split (and selection by it) is `train_and_evaluate`'s only: refused here.
"""

from __future__ import annotations

import functools
import time
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mnist_jax.core import config as config_lib
from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.optim import make_schedule
from mnist_jax.engine import checkpoint
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.engine import mesh as mesh_lib
from mnist_jax.engine import state as state_lib
from mnist_jax.engine import steps as steps_lib


def supports(config: ml_collections.ConfigDict) -> bool:
  """Whether `train_seeds` can train `config` (no validation split or selection)."""
  return (not config.data.get("validation_size", 0)
          and config.get("select", "last") == "last")


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.seed = int(seed)
  return copy


def stacked_states(config, seeds: Sequence[int], steps: int):
  """(stacked TrainState, shuffle keys, {'dropout', 'augment'}: stacked keys),
  one entry per seed."""
  keys = [state_lib.run_keys(seed) for seed in seeds]
  states = [state_lib.create_train_state(config, k["init"], steps) for k in keys]
  stack = lambda *trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  # apply_fn and tx are static and equal in function: keep the first seed's.
  fields = ("step", "params", "opt_state", "batch_stats", "ema_params")
  stacked = states[0].replace(**{f: stack(*[getattr(s, f) for s in states])
                                 for f in fields})
  return (stacked, [k["shuffle"] for k in keys],
          {name: jnp.stack([k[name] for k in keys]) for name in ("dropout", "augment")})


def unstack(tree, i: int):
  return jax.tree.map(lambda x: x[i], tree)


def _epoch(step, state, train_data, config, orders_SxN, step_keys, mesh):
  """One epoch of all seeds: seed s reads the training set in `orders_SxN[s]`.

  As in the loop, the training set is on the device and a call sends only
  the indices of its K = steps_per_dispatch batches per seed; the metrics
  are summed on the device and read once, at the end.
  """
  start = time.perf_counter()
  batch = config.batch_size
  steps = orders_SxN.shape[1] // batch  # spans end here: the ragged last batch is dropped
  orders = orders_SxN.astype(np.int32)
  sharding = NamedSharding(mesh, P(None, None, "data"))  # (seed, step, batch)
  sums = stacked_zero_sums(len(orders))
  for begin, end in steps_lib.dispatch_spans(0, steps, config.get("steps_per_dispatch", 1)):
    idx_SxKxB = steps_lib.span_indices(orders, begin, end, batch)
    state, sums = step(state, sums, train_data, jax.device_put(idx_SxKxB, sharding),
                       step_keys["dropout"], step_keys["augment"])
  return state, jax.device_get(sums), time.perf_counter() - start


def stacked_zero_sums(num_seeds: int) -> Dict[str, jax.Array]:
  """steps_lib.zero_sums() for each seed, stacked along a leading axis."""
  return jax.vmap(lambda _: steps_lib.zero_sums())(np.arange(num_seeds))


def _eval_step_per_seed(apply_fn, params, batch, batch_stats):
  """eval_lib.eval_step for every seed's params and batch_stats, on one batch."""
  return jax.vmap(functools.partial(eval_lib.eval_step, apply_fn),
                  in_axes=(0, None, 0))(params, batch, batch_stats)


# apply_fn is static: one compilation per model, reused by every epoch (a jit
# built inside _evaluate would compile again at each epoch's end).
_jitted_eval_step_per_seed = jax.jit(_eval_step_per_seed, static_argnums=0)


def _evaluate(state, test, batch_size: int, mesh) -> Dict[str, np.ndarray]:
  """Per-seed loss and accuracy on every test image (vmapped eval_step)."""
  sums = []
  for images, labels, mask in data_lib.eval_batches(test, batch_size):
    batch = mesh_lib.shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
    sums.append(_jitted_eval_step_per_seed(state.apply_fn, state_lib.eval_params(state),
                                           batch, state.batch_stats))
  total = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *jax.device_get(sums))
  return {"loss": total["loss_sum"] / total["count"],
          "accuracy": total["correct"] / total["count"], "count": total["count"]}


def _step(state, batch, dropout_key, augment_key, **options):
  return steps_lib.train_step(state, batch, dropout_key, aug_rng=augment_key, **options)


def compile_step(config, state, example, keys):
  """The vmapped train step compiled for `example` batches, and its compile time.

  (The benchmark's fixed-batch step; training uses `compile_epoch_step`.)
  """
  step = jax.jit(jax.vmap(functools.partial(_step, **state_lib.step_options(config))),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, example, keys["dropout"], keys["augment"]).compile()
  return compiled, time.perf_counter() - start


def compile_epoch_step(config, state, train_data, keys, mesh):
  """steps_lib.gather_steps vmapped over seeds (the training set shared), and its
  compile time: step(state, sums, train_data, idx_SxKxB, dropout, augment).

  Compiled ahead for K = steps_per_dispatch; an epoch's shorter last call
  compiles its shape on first use.
  """
  step = jax.jit(jax.vmap(functools.partial(steps_lib.gather_steps, **state_lib.step_options(config)),
                          in_axes=(0, 0, None, 0, 0, 0)), donate_argnums=(0, 1))
  seeds, k = len(keys["dropout"]), config.get("steps_per_dispatch", 1)
  sums = stacked_zero_sums(seeds)
  idx = jax.device_put(np.zeros((seeds, k, config.batch_size), np.int32),
                       NamedSharding(mesh, P(None, None, "data")))
  start = time.perf_counter()
  compiled = step.lower(state, sums, train_data, idx, keys["dropout"],
                        keys["augment"]).compile()
  compile_s = time.perf_counter() - start

  def step_fn(state, sums, train_data, idx_SxKxB, *rngs):
    fn = compiled if idx_SxKxB.shape[1] == k else step
    return fn(state, sums, train_data, idx_SxKxB, *rngs)
  return step_fn, compile_s


def _write_epoch(workdirs, mngrs, rngs, state, sums, test_metrics, epoch, lr, times):
  """Each seed's metrics line and checkpoint, as train_and_evaluate writes them."""
  epoch_s, train_s = times
  for i, workdir in enumerate(workdirs):
    if not np.isfinite(sums["loss_sum"][i]):
      raise UserError(f"training diverged in epoch {epoch} for seed #{i}: lower "
                      "config.optimizer.learning_rate.")
    step = int(state.step[i])
    count = float(sums["count"][i])
    run_dir.append_metrics(workdir, {
        "epoch": epoch, "step": step, "learning_rate": float(lr(step - 1)),
        "train_loss": float(sums["loss_sum"][i]) / count,
        "train_accuracy": float(sums["correct"][i]) / count,
        "test_loss": float(test_metrics["loss"][i]),
        "test_accuracy": float(test_metrics["accuracy"][i]),
        "test_count": int(test_metrics["count"][i]),
        "epoch_time_s": epoch_s, "train_time_s": train_s,
        # Images of this seed per second; all seeds together ran len(seeds)x.
        "train_images_per_s": count / train_s})
    checkpoint.save(mngrs[i], step, unstack(state, i), end_of_epoch_progress(
        epoch, rngs[i]))


def end_of_epoch_progress(epoch: int, rng_data) -> Dict:
  """The `progress` item train_and_evaluate saves at an epoch end, so that a
  seed's run directory restores and resumes like any other run."""
  return {"epoch": np.int32(epoch + 1), "batch": np.int32(0),
          "sums": jax.device_get(steps_lib.zero_sums()), "rng": np.asarray(rng_data)}


def train_seeds(config: ml_collections.ConfigDict, seeds: Sequence[int],
                workdirs: Sequence[str], *, mnist_dir: Optional[str] = None,
                data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                verbose: bool = True) -> List[Dict]:
  """Trains `config` once per seed in one vmapped program; one run dir per seed.

  Returns each seed's last-epoch metrics plus `compile_time_s` and
  `total_images_per_s` (all seeds together, last epoch).
  """
  if len(seeds) != len(workdirs) or not seeds:
    raise UserError(f"train_seeds got {len(seeds)} seeds and {len(workdirs)} "
                    "workdirs: give one workdir per seed.")
  config_lib.validate(config)
  if not supports(config):
    raise UserError("train_seeds has no validation split: set "
                    "config.data.validation_size = 0 and select = 'last', or train "
                    "each seed with train_and_evaluate.")
  build_model(config.model)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.batch_size)
  mesh_lib.check_batch_size(config.eval_batch_size, "eval_batch_size")
  train_split, test = data or data_lib.load_mnist(
      mnist_dir, train_split=config.data.train_split, test_split=config.data.test_split)
  steps = state_lib.steps_per_epoch(config, len(train_split))
  state, shuffle_keys, step_keys = stacked_states(config, seeds, steps)
  state = mesh_lib.replicate(state, mesh)
  for seed, workdir in zip(seeds, workdirs):
    run_dir.write_config(workdir, seed_config(config, seed))
  train_data = mesh_lib.replicate({"image": train_split.images,
                                 "label": train_split.labels}, mesh)
  step, compile_s = compile_epoch_step(config, state, train_data, step_keys, mesh)
  mngrs = [checkpoint.manager(w, config.checkpoint.max_to_keep) for w in workdirs]
  rngs = [jax.random.key_data(jnp.stack([k, d]))
          for k, d in zip(shuffle_keys, step_keys["dropout"])]
  lr = make_schedule(config.optimizer, steps, config.num_epochs)
  for epoch in range(1, config.num_epochs + 1):
    start = time.perf_counter()
    orders = np.stack([data_lib.epoch_permutation(k, epoch, len(train_split))
                       for k in shuffle_keys])
    state, sums, train_s = _epoch(step, state, train_data, config, orders,
                                  step_keys, mesh)
    test_metrics = _evaluate(state, test, config.eval_batch_size, mesh)
    _write_epoch(workdirs, mngrs, rngs, state, sums, test_metrics, epoch, lr,
                 (time.perf_counter() - start, train_s))
    if verbose:
      print(f"epoch {epoch}: test accuracy per seed "
            f"{np.round(test_metrics['accuracy'], 4).tolist()} "
            f"({len(seeds) * float(sums['count'][0]) / train_s:,.0f} img/s, all seeds)")
  for m in mngrs:
    m.wait_until_finished()
    m.close()
  total = len(seeds) * float(sums["count"][0]) / train_s
  return [dict(run_dir.read_metrics(w)[-1], compile_time_s=compile_s,
               total_images_per_s=total) for w in workdirs]
