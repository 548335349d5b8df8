"""Training and evaluation: `train_and_evaluate(config, workdir)` is the entry point.

The train step is a pure function (state, batch, rng) -> (state, metrics),
jit-compiled once ahead of the loop with the state donated. Each epoch is a
Python loop of jitted steps rather than one `lax.scan`: on the project's CPUs
the scan form measured ten times slower (FIELD_NOTES).

Batches are sharded over every local device along a 'data' mesh axis and the
state is replicated; one device is just a mesh of size one.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from mnist_jax import checkpoint, config as config_lib, data as data_lib, run_dir
from mnist_jax.errors import UserError
from mnist_jax.models import build_model
from mnist_jax.models.layers import count_params
from mnist_jax.optim import make_optimizer, make_schedule

Batch = Dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """params, opt_state and step (flax's TrainState); apply_fn and tx are static."""


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


def train_step(state: TrainState, batch: Batch, rng: jax.Array,
               label_smoothing: float = 0.0) -> Tuple[TrainState, Dict]:
  """One optimiser update on `batch`; metrics are sums, not means."""
  images = data_lib.scale_pixels(batch["image"])
  labels = batch["label"]
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, images, train=True,
                            rngs={"dropout": dropout_rng})
    return cross_entropy(logits, labels, label_smoothing).mean(), logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads)
  metrics = {
      "loss_sum": loss * labels.shape[0],
      "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
      "count": jnp.asarray(labels.shape[0], jnp.int32),
  }
  return state, metrics


def eval_step(apply_fn, params, batch: Batch) -> Dict:
  """Sums of loss and correct predictions over the real (mask=1) examples."""
  logits = apply_fn({"params": params}, data_lib.scale_pixels(batch["image"]),
                    train=False)
  mask = batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
          "count": jnp.sum(mask)}


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


def shard_batch(arrays: Dict[str, np.ndarray], mesh) -> Batch:
  """Places a host batch on the devices, split along the batch axis."""
  return jax.device_put(arrays, NamedSharding(mesh, P("data")))


def replicate(tree, mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))


# ----------------------------------------------------------------------------
# State creation and evaluation.
# ----------------------------------------------------------------------------

def create_train_state(config: ml_collections.ConfigDict, init_rng: jax.Array,
                       steps_per_epoch: int) -> TrainState:
  """Fresh parameters and optimiser state for `config`."""
  model = build_model(config.model)
  dummy = jnp.zeros((1,) + data_lib.IMAGE_SHAPE, jnp.float32)
  params = model.init(init_rng, dummy, train=False)["params"]
  schedule = make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
  tx = make_optimizer(config.optimizer, schedule)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


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
  step = jax.jit(functools.partial(eval_step, state.apply_fn))
  sums = []
  for images, labels, mask in data_lib.eval_batches(split, batch_size):
    batch = shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
    sums.append(step(state.params, batch))
  total = jax.tree.map(lambda *xs: float(np.sum(xs)), *jax.device_get(sums))
  return {"loss": total["loss_sum"] / total["count"],
          "accuracy": total["correct"] / total["count"],
          "count": int(total["count"])}


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------

def describe_devices() -> str:
  return (f"JAX {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s): {', '.join(str(d) for d in jax.devices())}")


def _compile_train_step(config, state, mesh, example_batch):
  """jit + AOT compile, so compile time is measured apart from the epochs."""
  step = jax.jit(functools.partial(train_step,
                                   label_smoothing=config.label_smoothing),
                 donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, example_batch, jax.random.key(0)).compile()
  return compiled, time.perf_counter() - start


def _train_epoch(compiled_step, state, train, config, order, mesh, dropout_key,
                 epoch):
  """Runs one epoch; returns the new state, summed metrics and train time."""
  start = time.perf_counter()
  step_metrics = []
  batches = data_lib.train_batches(train, config.batch_size, order)
  total = len(order) // config.batch_size
  for images, labels in tqdm(batches, total=total, desc=f"epoch {epoch}",
                             leave=False, disable=None, file=sys.stderr):
    batch = shard_batch({"image": images, "label": labels}, mesh)
    state, metrics = compiled_step(state, batch, dropout_key)
    step_metrics.append(metrics)  # stays on device: no sync per step
  sums = jax.tree.map(lambda *xs: float(np.sum(xs)), *jax.device_get(step_metrics))
  return state, sums, time.perf_counter() - start


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mnist_dir: Optional[str] = None,
                       data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                       verbose: bool = True) -> Dict:
  """Trains `config`, evaluates on the test set each epoch, writes `workdir`.

  `data` (train, test) skips loading, for studies that train many runs.
  Returns the last epoch's metrics plus `num_params` and `compile_time_s`.
  """
  config_lib.validate(config)
  build_model(config.model)  # rejects an impossible architecture before any work
  log = print if verbose else (lambda *a, **k: None)
  log(describe_devices())
  mesh = make_mesh()
  check_batch_size(config.batch_size)
  check_batch_size(config.eval_batch_size, "eval_batch_size")
  train, test = data or data_lib.load_mnist(mnist_dir, train_split=config.data.train_split,
                                            test_split=config.data.test_split)
  steps = steps_per_epoch(config, len(train))

  init_key, shuffle_key, dropout_key = jax.random.split(jax.random.key(config.seed), 3)
  state = replicate(create_train_state(config, init_key, steps), mesh)
  num_params = count_params(state.params)
  log(f"model {config.model.name}: {num_params:,} parameters; "
      f"{len(train):,} train / {len(test):,} test images; {steps} steps per epoch")

  run_dir.write_config(workdir, config)
  example = shard_batch({"image": train.images[:config.batch_size],
                         "label": train.labels[:config.batch_size]}, mesh)
  compiled_step, compile_s = _compile_train_step(config, state, mesh, example)
  log(f"train step compiled in {compile_s:.1f}s")
  mngr = checkpoint.manager(workdir)
  schedule = make_schedule(config.optimizer, steps, config.num_epochs)
  metrics = {}
  for epoch in range(1, config.num_epochs + 1):
    epoch_start = time.perf_counter()
    order = data_lib.epoch_permutation(shuffle_key, epoch, len(train))
    state, sums, train_s = _train_epoch(compiled_step, state, train, config, order,
                                        mesh, dropout_key, epoch)
    if not np.isfinite(sums["loss_sum"]):
      raise UserError(f"training diverged in epoch {epoch} (loss is "
                      f"{sums['loss_sum']}): lower config.optimizer.learning_rate.")
    test_metrics = evaluate(state, test, config.eval_batch_size, mesh)
    step = int(state.step)
    metrics = {
        "epoch": epoch, "step": step,
        "learning_rate": float(schedule(step - 1)),
        "train_loss": sums["loss_sum"] / sums["count"],
        "train_accuracy": sums["correct"] / sums["count"],
        "test_loss": test_metrics["loss"], "test_accuracy": test_metrics["accuracy"],
        "test_count": test_metrics["count"],
        "epoch_time_s": time.perf_counter() - epoch_start,
        "train_time_s": train_s,
        "train_images_per_s": sums["count"] / train_s,
    }
    run_dir.append_metrics(workdir, metrics)
    checkpoint.save(mngr, step, state)
    log(f"epoch {epoch:3d}  train loss {metrics['train_loss']:.4f} "
        f"acc {metrics['train_accuracy']:.4f}  test loss {metrics['test_loss']:.4f} "
        f"acc {metrics['test_accuracy']:.4f}  {metrics['epoch_time_s']:.1f}s "
        f"({metrics['train_images_per_s']:,.0f} img/s)")
  mngr.wait_until_finished()
  mngr.close()
  return dict(metrics, num_params=num_params, compile_time_s=compile_s)


def restore_and_evaluate(workdir: str, *, mnist_dir: Optional[str] = None) -> Dict:
  """Restores a run's last checkpoint and evaluates it on the test set."""
  config = run_dir.read_config(workdir)
  test = data_lib.load_split(config.data.test_split, mnist_dir)
  state = restore_state(workdir, config)
  return evaluate(state, test, config.eval_batch_size)


def restore_state(workdir: str, config: ml_collections.ConfigDict) -> TrainState:
  """The run's last saved TrainState (model and optimiser rebuilt from config)."""
  template = create_train_state(config, jax.random.key(0), steps_per_epoch=1)
  return checkpoint.restore_latest(workdir, template)
