"""Training and evaluation: `train_and_evaluate(config, workdir)` is the entry point.

The train step is a pure function (state, batch, rng) -> (state, metrics),
jit-compiled once ahead of the loop with the state donated. Each epoch is a
Python loop of jitted steps rather than one `lax.scan`: on the project's CPUs
a whole epoch in one scan measured ten times slower for a CNN (FIELD_NOTES).
`config.steps_per_dispatch` = K > 1 runs K steps per call, as a scan over K
batches' indices: for a model whose step is about a millisecond (the MLP) the
host's per-call work is then paid once per K steps (docs/performance.md).

Batches are sharded over every device (of every process) along a 'data'
mesh axis and the state is replicated; one device is just a mesh of size one.
Each process puts only its own rows of a batch on its devices.

A run checkpoints every `config.checkpoint.every_steps` steps and at each
epoch end; started again on the same workdir it resumes from the newest
checkpoint and ends with the same parameters and metrics as an uninterrupted
run. A NaN or inf loss stops the run before any non-finite state is saved.

Optional parts, all off by default: batch norm statistics carried in the
state (models that have them), augmentation of the training images inside the
step (`config.augment`), an exponential moving average of the weights used for
evaluation (`config.ema_decay`), and a validation split carved from the end of
the training set (`config.data.validation_size`), which `config.select =
'best_val'` uses to pick the epoch the run reports and keeps.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from mnist_jax import augment as augment_lib
from mnist_jax import checkpoint, config as config_lib, data as data_lib, run_dir
from mnist_jax.errors import UserError
from mnist_jax.models import build_model
from mnist_jax.models.layers import count_params
from mnist_jax.optim import make_optimizer, make_schedule

Batch = Dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """params, opt_state and step (flax's TrainState); apply_fn and tx are static.

  batch_stats: batch norm running statistics ({} for models without batch norm).
  ema_params: moving average of params, used for evaluation (None when off);
  ema_decay (static) is its decay.
  """
  batch_stats: Any = struct.field(default_factory=dict)
  ema_params: Any = None
  ema_decay: float = struct.field(pytree_node=False, default=0.0)


def eval_params(state: TrainState):
  """The weights evaluation uses: the moving average when there is one."""
  return state.params if state.ema_params is None else state.ema_params


def run_keys(seed: int) -> Dict[str, jax.Array]:
  """The named keys a run derives from its seed.

  split(key, 4)'s first three keys equal split(key, 3)'s (tested), so the
  init, shuffle and dropout keys are the ones runs had before 'augment' existed.
  """
  names = ("init", "shuffle", "dropout", "augment")
  return dict(zip(names, jax.random.split(jax.random.key(seed), len(names))))


# ----------------------------------------------------------------------------
# Pure functions: loss, one training step, one evaluation step.
# ----------------------------------------------------------------------------

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


def ema_update(ema, params, decay: float):
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


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
    state = state.replace(
        ema_params=ema_update(state.ema_params, state.params, state.ema_decay))
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


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def variables(params, batch_stats=None) -> Dict:
  """The variables for `apply`: batch_stats only for models that have them."""
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {
      "params": params}


def eval_step(apply_fn, params, batch: Batch, batch_stats=None) -> Dict:
  """Sums of loss and correct predictions over the real (mask=1) examples."""
  logits = apply_fn(variables(params, batch_stats),
                    data_lib.scale_pixels(batch["image"]), train=False)
  mask = batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
          "count": jnp.sum(mask)}


# apply_fn is static: one compilation per model, reused by every epoch's evaluation.
_jitted_eval_step = jax.jit(eval_step, static_argnums=0)


# ----------------------------------------------------------------------------
# Devices and shardings.
# ----------------------------------------------------------------------------

def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over all devices; Auto axes, as Explicit ones break Linen Dropout."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str = "batch_size") -> None:
  n = jax.device_count()
  if batch_size % n:
    works = [batch_size - batch_size % n, batch_size + n - batch_size % n]
    raise UserError(
        f"config.{name} = {batch_size} does not split evenly over {n} devices: "
        f"use a multiple of {n} (e.g. {works[0] or n} or {works[1]}).")


def _process_rows(x: np.ndarray, sharding: NamedSharding) -> np.ndarray:
  """The rows of the global array `x` that this process's devices hold, in order."""
  spans = {(idx[0].start or 0, x.shape[0] if idx[0].stop is None else idx[0].stop)
           for idx in sharding.addressable_devices_indices_map(x.shape).values()}
  return np.concatenate([x[a:b] for a, b in sorted(spans)])


def shard_batch(arrays: Dict[str, np.ndarray], mesh) -> Batch:
  """A global host batch -> arrays split along the batch axis over all devices.

  Every process holds the same global batch (MNIST fits in memory) and hands
  JAX only the rows its own devices hold.
  """
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(
              sharding, _process_rows(np.asarray(v), sharding), np.shape(v))
          for k, v in arrays.items()}


def shard_steps(idx_KxB: np.ndarray, mesh) -> jax.Array:
  """K batches' indices, each row split over the devices like `shard_batch`."""
  idx_KxB = np.asarray(idx_KxB)
  return jax.make_array_from_callback(idx_KxB.shape, NamedSharding(mesh, P(None, "data")),
                                      lambda index: idx_KxB[index])


def replicate(tree, mesh):
  """The same value on every device; every process must pass equal values."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), np.shape(x)), tree)


def to_host(tree):
  """Replicated device values -> numpy, read from this process's first copy."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


# ----------------------------------------------------------------------------
# State creation and evaluation.
# ----------------------------------------------------------------------------

def create_train_state(config: ml_collections.ConfigDict, init_rng: jax.Array,
                       steps_per_epoch: int) -> TrainState:
  """Fresh parameters and optimiser state for `config`."""
  model = build_model(config.model)
  dummy = jnp.zeros((1,) + data_lib.IMAGE_SHAPE, jnp.float32)
  init = model.init(init_rng, dummy, train=False)
  params = init["params"]
  schedule = make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = make_optimizer(config.optimizer, schedule)
  ema_decay = float(config.get("ema_decay", 0.0))  # runs saved before EMA lack it
  # A copy, not the same arrays: the step donates the state's buffers.
  ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                           batch_stats=init.get("batch_stats", {}),
                           ema_params=ema, ema_decay=ema_decay)


def step_options(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """The config's settings that `train_step` takes besides state, batch, keys."""
  return {"label_smoothing": config.label_smoothing,
          "augment": config.get("augment")}


def steps_per_epoch(config: ml_collections.ConfigDict, num_train: int) -> int:
  steps = num_train // config.batch_size
  if steps < 1:
    raise UserError(
        f"config.batch_size = {config.batch_size} is larger than the "
        f"{num_train} training images: use a smaller batch size.")
  return steps


def evaluate(state: TrainState, split: data_lib.Split, batch_size: int,
             mesh=None) -> Dict[str, float]:
  """Loss and accuracy over every image of `split`, each counted once."""
  mesh = mesh or make_mesh()
  check_batch_size(batch_size, "eval_batch_size")
  sums = []
  for images, labels, mask in data_lib.eval_batches(split, batch_size):
    batch = shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
    sums.append(_jitted_eval_step(state.apply_fn, eval_params(state), batch,
                                  state.batch_stats))
  total = jax.tree.map(lambda *xs: float(np.sum(xs)), *to_host(sums))
  return {"loss": total["loss_sum"] / total["count"],
          "accuracy": total["correct"] / total["count"],
          "count": int(total["count"])}


# ----------------------------------------------------------------------------
# The loop: resumable, checkpointed, stopped by a non-finite loss.
# ----------------------------------------------------------------------------

def describe_devices() -> str:
  return (f"JAX {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s) in {jax.process_count()} process(es): "
          f"{', '.join(str(d) for d in jax.devices())}")


@dataclasses.dataclass
class _Run:
  """Everything the loop needs that stays fixed for the whole run."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  train: data_lib.Split
  val: Optional[data_lib.Split]  # None without config.data.validation_size
  test: data_lib.Split
  steps: int  # per epoch
  schedule: Any  # optax schedule: the learning rate of each step, for the metrics line
  train_data: Batch  # the training images and labels, on every device
  step_fn: Any  # _compile_train_step's: trains K batches per call
  mngr: Any  # orbax CheckpointManager
  best_mngr: Any  # the best epoch's checkpoint (select='best_val'), else None
  keys: Dict[str, jax.Array]  # run_keys(config.seed)
  rng_data: jax.Array  # shuffle and dropout keys' data, saved with every checkpoint
  log: Any
  best_val: float = -1.0  # best validation accuracy kept so far

  @property
  def writer(self) -> bool:
    """Only process 0 writes config.json and metrics.jsonl."""
    return jax.process_index() == 0


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


def _compile_train_step(config, state, sums, train_data, mesh):
  """jit + AOT compile, so compile time is measured apart from the epochs.

  Returns (step_fn, seconds): step_fn(state, sums, train_data, idx_KxB, rng,
  aug_rng) trains the K batches of idx_KxB (an int array on the host).
  With steps_per_dispatch K > 1, a call with fewer rows (an epoch's last,
  ragged span) compiles that shape once, on first use.
  """
  k, batch = config.get("steps_per_dispatch", 1), config.batch_size
  keys = (jax.random.key(0), jax.random.key(0))
  start = time.perf_counter()
  if k == 1:
    step = jax.jit(functools.partial(gather_step, **step_options(config)),
                   donate_argnums=(0, 1))
    example = shard_batch({"idx": np.zeros(batch, np.int32)}, mesh)["idx"]
    compiled = step.lower(state, sums, train_data, example, *keys).compile()

    def step_fn(state, sums, data, idx_KxB, *rngs):
      return compiled(state, sums, data, shard_batch({"idx": idx_KxB[0]}, mesh)["idx"],
                      *rngs)
  else:
    multi_step = jax.jit(functools.partial(gather_steps, **step_options(config)),
                         donate_argnums=(0, 1))
    example = shard_steps(np.zeros((k, batch), np.int32), mesh)
    compiled = multi_step.lower(state, sums, train_data, example, *keys).compile()

    def step_fn(state, sums, data, idx_KxB, *rngs):
      fn = compiled if len(idx_KxB) == k else multi_step
      return fn(state, sums, data, shard_steps(idx_KxB, mesh), *rngs)
  return step_fn, time.perf_counter() - start


def _compile_epoch_end(config, state: TrainState, split: data_lib.Split, schedule,
                       mesh) -> float:
  """Runs once, results discarded, what each epoch's end compiles on first
  use: the eval step (on `split`'s first batch), the finiteness check and the
  learning-rate schedule. Their compilation is then timed with the train
  step's, not inside epoch 1 (~1.1 s of a ~10 s speedrun epoch). Returns the
  seconds it took."""
  start = time.perf_counter()
  images, labels, mask = next(data_lib.eval_batches(split, config.eval_batch_size))
  batch = shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
  jax.block_until_ready(_jitted_eval_step(state.apply_fn, eval_params(state), batch,
                                          state.batch_stats))
  to_host(all_finite(state.params))
  float(schedule(0))
  return time.perf_counter() - start


def _progress(run: _Run, epoch: int, batch: int, sums: Dict) -> Dict:
  """Where training stands: the next batch to train is `batch` of `epoch`."""
  return {"epoch": replicate(np.int32(epoch), run.mesh),
          "batch": replicate(np.int32(batch), run.mesh),
          "sums": sums, "rng": run.rng_data}


def _check_finite(run: _Run, state: TrainState, sums: Dict, step: int) -> None:
  """Raises before a NaN or inf reaches a checkpoint (one host sync per save)."""
  bad_step = int(to_host(sums["first_bad_step"]))
  if bad_step < 0 and bool(to_host(all_finite(state.params))):
    return
  run.mngr.wait_until_finished()
  where = (f"the loss was NaN or inf at step {bad_step}" if bad_step >= 0
           else f"the parameters became NaN or inf by step {step}")
  last = run.mngr.latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept" if last is not None
          else "no checkpoint was saved")
  raise UserError(f"training diverged: {where} (epoch {(step - 1) // run.steps + 1}); "
                  f"{kept}; lower config.optimizer.learning_rate.")


def _save(run: _Run, step: int, state, epoch: int, batch: int, sums: Dict) -> None:
  _check_finite(run, state, sums, step)
  checkpoint.save(run.mngr, step, state, _progress(run, epoch, batch, sums))


def _train_epoch(run: _Run, state, sums, epoch: int, first_batch: int):
  """Trains batches first_batch.. of `epoch`, saving every `every_steps` steps."""
  config = run.config
  every, batch = config.checkpoint.every_steps, config.batch_size
  order = data_lib.epoch_permutation(run.keys["shuffle"], epoch, len(run.train))
  order = order.astype(np.int32)  # spans end at run.steps: the ragged last batch is dropped
  spans = dispatch_spans(first_batch, run.steps, config.get("steps_per_dispatch", 1))
  done = (epoch - 1) * run.steps  # steps before this epoch; reading state.step syncs
  with tqdm(total=run.steps - first_batch, desc=f"epoch {epoch}", leave=False,
            disable=None, file=sys.stderr) as bar:
    for start, stop in spans:
      idx_KxB = span_indices(order, start, stop, batch)
      state, sums = run.step_fn(state, sums, run.train_data, idx_KxB,
                                run.keys["dropout"], run.keys["augment"])
      bar.update(stop - start)
      # Save when the span passed a multiple of every_steps (with one step per
      # call: every `every` steps); the epoch end saves in _run_epoch.
      if every and (done + stop) // every > (done + start) // every and stop < run.steps:
        _save(run, done + stop, state, epoch, stop, sums)
  return state, sums


def _epoch_metrics(run: _Run, state, sums, epoch: int, first_batch: int,
                   times: Tuple[float, float]) -> Dict:
  """The epoch's metrics line: train sums, test (and validation) evaluation."""
  start, train_s = times
  step = epoch * run.steps
  totals = to_host(sums)
  test_metrics = evaluate(state, run.test, run.config.eval_batch_size, run.mesh)
  trained = (run.steps - first_batch) * run.config.batch_size  # in this process's life
  metrics = {
      "epoch": epoch, "step": step,
      "learning_rate": float(run.schedule(step - 1)),
      "train_loss": float(totals["loss_sum"]) / int(totals["count"]),
      "train_accuracy": int(totals["correct"]) / int(totals["count"]),
      "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
      "test_count": test_metrics["count"],
  }
  if run.val is not None:
    val = evaluate(state, run.val, run.config.eval_batch_size, run.mesh)
    metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"],
                   val_count=val["count"])
  return dict(metrics, epoch_time_s=time.perf_counter() - start,
              train_time_s=train_s, train_images_per_s=trained / train_s)


def _keep_if_best(run: _Run, step: int, state, metrics: Dict) -> None:
  """With select='best_val': keeps the state of the best validation epoch.

  Strictly better only, so the first of equal epochs is kept, as
  run_dir.selected_index picks it. A redone epoch (resumed after a kill)
  reaches the same accuracy and is not saved twice.
  """
  if run.best_mngr is None or metrics["val_accuracy"] <= run.best_val:
    return
  run.best_val = metrics["val_accuracy"]
  checkpoint.save_best(run.best_mngr, step, state,
                       {"epoch": metrics["epoch"], "val_accuracy": run.best_val})


def _run_epoch(run: _Run, state, sums, epoch: int, first_batch: int):
  """Trains the rest of `epoch`, evaluates, writes its metrics line, saves."""
  start = time.perf_counter()
  state, sums = _train_epoch(run, state, sums, epoch, first_batch)
  # Steps are dispatched asynchronously: wait for the last one before timing.
  jax.block_until_ready((state, sums))
  train_s = time.perf_counter() - start
  step = epoch * run.steps
  _check_finite(run, state, sums, step)
  metrics = _epoch_metrics(run, state, sums, epoch, first_batch, (start, train_s))
  # The line goes first: a kill before the checkpoint below is durable redoes
  # this epoch, and the resumed run drops the line (run_dir.keep_epochs).
  if run.writer:
    run_dir.append_metrics(run.workdir, metrics)
  _keep_if_best(run, step, state, metrics)
  checkpoint.save(run.mngr, step, state,
                  _progress(run, epoch + 1, 0, replicate(zero_sums(), run.mesh)))
  return state, metrics


def _log_epoch(log, m: Dict) -> None:
  val = (f"val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}  "
         if "val_accuracy" in m else "")
  log(f"epoch {m['epoch']:3d}  train loss {m['train_loss']:.4f} "
      f"acc {m['train_accuracy']:.4f}  {val}test loss {m['test_loss']:.4f} "
      f"acc {m['test_accuracy']:.4f}  {m['epoch_time_s']:.1f}s "
      f"({m['train_images_per_s']:,.0f} img/s)")


def _claim_workdir(workdir: str, config, force: bool) -> None:
  """Process 0 checks/claims the workdir; the others wait until it has."""
  if jax.process_index() == 0:
    run_dir.claim(workdir, config, force)
  multihost_utils.sync_global_devices("mnist_jax: workdir claimed")


def _start(run: _Run, state, progress):
  """Resumes from the newest checkpoint if there is one: (state, sums, epoch, batch)."""
  restored = checkpoint.restore(run.mngr, state, progress)
  if restored is not None:
    state, progress = restored
    if not np.array_equal(to_host(progress["rng"]), to_host(run.rng_data)):
      raise UserError(f"the checkpoints in {run.workdir!r} come from another seed "
                      "than its config.json: use a new --workdir.")
  epoch, batch = int(to_host(progress["epoch"])), int(to_host(progress["batch"]))
  if restored is not None:
    run.log(f"resuming from the checkpoint at step {(epoch - 1) * run.steps + batch} "
            f"(epoch {epoch}, batch {batch})")
  if run.writer:
    run_dir.keep_epochs(run.workdir, epoch - 1)
  if run.best_mngr is not None:
    best = checkpoint.best_selection(run.best_mngr)
    run.best_val = -1.0 if best is None else float(best["val_accuracy"])
  return state, progress["sums"], epoch, batch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mnist_dir: Optional[str] = None,
                       data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                       verbose: bool = True, force: bool = False) -> Dict:
  """Trains `config`, evaluates on the test set each epoch, writes `workdir`.

  A workdir holding this config's run resumes from its newest checkpoint; one
  holding another config's run is refused unless `force` (which overwrites it).
  `data` (train, test) skips loading, for studies that train many runs; the
  validation split, if any, is carved from its train split here.
  Returns the selected epoch's metrics (the last, or with select='best_val'
  the best validation epoch's) plus `selected_epoch`, `num_params` and
  `compile_time_s` (the train step's and what each epoch's end compiles).
  """
  config_lib.validate(config)
  build_model(config.model)  # rejects an impossible architecture before any work
  log = print if verbose else (lambda *a, **k: None)
  log(describe_devices())
  mesh = make_mesh()
  check_batch_size(config.batch_size)
  check_batch_size(config.eval_batch_size, "eval_batch_size")
  _claim_workdir(workdir, config, force)
  train, test = data or data_lib.load_mnist(mnist_dir, train_split=config.data.train_split,
                                            test_split=config.data.test_split)
  train, val = data_lib.split_validation(train, config.data.get("validation_size", 0))
  steps = steps_per_epoch(config, len(train))

  keys = run_keys(config.seed)
  state = replicate(create_train_state(config, keys["init"], steps), mesh)
  num_params = count_params(state.params)
  log(f"model {config.model.name}: {num_params:,} parameters; {len(train):,} train / "
      f"{len(val) if val else 0:,} validation / {len(test):,} test images; "
      f"{steps} steps per epoch")
  train_data = replicate({"image": train.images, "label": train.labels}, mesh)
  sums = replicate(zero_sums(), mesh)
  step_fn, compile_s = _compile_train_step(config, state, sums, train_data, mesh)
  schedule = make_schedule(config.optimizer, steps, config.num_epochs)
  compile_s += _compile_epoch_end(config, state, test, schedule, mesh)
  log(f"train and eval steps compiled in {compile_s:.1f}s")
  select = config.get("select", "last")
  run = _Run(config, workdir, mesh, train, val, test, steps, schedule, train_data, step_fn,
             checkpoint.manager(workdir, config.checkpoint.max_to_keep),
             checkpoint.best_manager(workdir) if select == "best_val" else None,
             keys, replicate(jax.random.key_data(
                 jnp.stack([keys["shuffle"], keys["dropout"]])), mesh), log)
  try:
    _loop(run, state, sums)
  finally:
    for mngr in filter(None, (run.mngr, run.best_mngr)):
      mngr.wait_until_finished()
      mngr.close()
  lines = run_dir.read_metrics(workdir)  # every epoch's, from before a resume too
  metrics = lines[run_dir.selected_index(lines, select)]
  if select == "best_val":
    log(f"selected epoch {metrics['epoch']} (best validation accuracy "
        f"{metrics['val_accuracy']:.4f}): test accuracy {metrics['test_accuracy']:.4f}")
  return dict(metrics, selected_epoch=metrics["epoch"], num_params=num_params,
              compile_time_s=compile_s)


def _loop(run: _Run, state, sums) -> None:
  """The epochs left to train."""
  state, sums, first_epoch, first_batch = _start(
      run, state, _progress(run, 1, 0, sums))
  if first_epoch > run.config.num_epochs:
    run.log("the run is already complete: nothing to train")
    return
  for epoch in range(first_epoch, run.config.num_epochs + 1):
    state, metrics = _run_epoch(run, state, sums, epoch, first_batch)
    _log_epoch(run.log, metrics)
    sums, first_batch = replicate(zero_sums(), run.mesh), 0


def selected_checkpoint(config: ml_collections.ConfigDict) -> str:
  """'best' for runs that select by validation accuracy, else 'last'."""
  return "best" if config.get("select", "last") == "best_val" else "last"


def restore_and_evaluate(workdir: str, *, mnist_dir: Optional[str] = None) -> Dict:
  """Restores a run's selected checkpoint (see selected_checkpoint) and
  evaluates it on the test set."""
  config = run_dir.read_config(workdir)
  test = data_lib.load_split(config.data.test_split, mnist_dir)
  mesh = make_mesh()
  state = restore_state(workdir, config, mesh, which=selected_checkpoint(config))
  return evaluate(state, test, config.eval_batch_size, mesh)


def restore_state(workdir: str, config: ml_collections.ConfigDict,
                  mesh=None, which: str = "last") -> TrainState:
  """The run's last saved TrainState ('last'), or that of its best validation
  epoch ('best'), replicated over `mesh` (any device count)."""
  template = create_train_state(config, jax.random.key(0), steps_per_epoch=1)
  return checkpoint.restore_latest(workdir, replicate(template, mesh or make_mesh()),
                                   which)
