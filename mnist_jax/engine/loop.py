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
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from mnist_jax.core import config as config_lib
from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import count_params
from mnist_jax.core.optim import make_schedule
from mnist_jax.engine import checkpoint
from mnist_jax.engine.evaluate import _jitted_eval_step, evaluate
from mnist_jax.engine.mesh import (
  check_batch_size,
  describe_devices,
  make_mesh,
  replicate,
  shard_batch,
  shard_steps,
  to_host,
)
from mnist_jax.engine.state import (
  TrainState,
  create_train_state,
  eval_params,
  run_keys,
  step_options,
  steps_per_epoch,
)
from mnist_jax.engine.steps import (
  Batch,
  all_finite,
  dispatch_spans,
  gather_step,
  gather_steps,
  span_indices,
  zero_sums,
)


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
  """Raises before a NaN or inf reaches a checkpoint (one host sync per save).

  It runs only where the run saves: at the end of each call (of K steps) that
  passes a multiple of `every_steps`, and at each epoch end. A divergence is
  so found up to a save interval late, and the message names both steps:
  configs/mlp.py (32 steps per call) on 2,000 images (15 steps per epoch)
  diverging at step 2 is found at step 15, before its first save.
  """
  bad_step = int(to_host(sums["first_bad_step"]))
  if bad_step < 0 and bool(to_host(all_finite(state.params))):
    return
  run.mngr.wait_until_finished()
  at = bad_step if bad_step >= 0 else step
  where = ("the loss was NaN or inf at step" if bad_step >= 0
           else "the parameters became NaN or inf by step")
  found = f", found at step {step}" if step != at else ""
  last = run.mngr.latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept" if last is not None
          else "no checkpoint was saved before it")
  raise UserError(f"training diverged: {where} {at} (epoch {(at - 1) // run.steps + 1})"
                  f"{found}; {kept}; lower config.optimizer.learning_rate.")


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
