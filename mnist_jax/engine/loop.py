"""Training and evaluation of S >= 1 runs: `train_runs(config, seeds, workdirs)`,
and `train_and_evaluate(config, workdir)`, its one-run form, the entry point.

The train step is a pure function (state, batch, rng) -> (state, metrics),
jit-compiled once ahead of the loop with the state donated. Each epoch is a
Python loop of jitted steps rather than one `lax.scan`: on the project's CPUs
a whole epoch in one scan runs 7x slower for a CNN (docs/decisions.md).
`config.steps_per_dispatch` = K > 1 runs K steps per call, as a scan over K
batches' indices: for a model whose step is about a millisecond (the MLP) the
host's per-call work is then paid once per K steps (docs/performance.md).

One seed trains its one state (no vmap). Several seeds train as one program:
their states stacked along a leading axis and the same step functions
(engine/steps.py) under jax.vmap, so small models keep busy the cores one
seed leaves idle (4 MLP seeds: 1.57x the images/s of one, docs/performance.md).
Each seed keeps its own init, data order, dropout and augmentation keys, its
own run directory (config.json with its seed, metrics.jsonl, checkpoints of
its unstacked state) and everything below, per seed. Its run directory
equals that seed trained alone up to float rounding, not bitwise: XLA
compiles the vmapped program's arithmetic differently (measured, tiny CNN
and MLP of tests/test_seeds.py, 2 epochs: metrics within 1.1e-7 relative,
every state entry within 3e-8; tested at 1e-5).

Batches are sharded over every device (of every process) along a 'data'
mesh axis and the state is replicated; one device is just a mesh of size one.
Each process puts only its own rows of a batch on its devices.

A run checkpoints every `config.checkpoint.every_steps` steps and at each
epoch end; started again on the same workdir(s) it resumes from the newest
checkpoint (of a group: the newest step all seeds have, engine/resume.py) and
ends with the same parameters and metrics as an uninterrupted run. A NaN or
inf loss or train state stops the run before any non-finite state is saved.

Optional parts, all off by default: batch norm statistics carried in the
state (models that have them), augmentation of the training images inside the
step (`config.augment`), an exponential moving average of the weights used for
evaluation (`config.ema_decay`), and a validation split carved from the end of
the training set (`config.data.validation_size`), which `config.select =
'best_val'` uses to pick the epoch the run reports and keeps.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from mnist_jax.core import config as config_lib
from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir, splits
from mnist_jax.core import workdir as workdir_lib
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import count_params
from mnist_jax.core.optim import make_schedule
from mnist_jax.engine import checkpoint, metric_writer, resume
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.engine.group import Group, check_group, claim_workdirs, rng_data, seed_config
from mnist_jax.engine.mesh import (
  check_batch_size,
  describe_devices,
  make_mesh,
  replicate,
  shard_batch,
  shard_indices,
  to_host,
)
from mnist_jax.engine.state import (check_fits_in_memory, create_train_state, run_keys,
                                    steps_per_epoch)
from mnist_jax.engine.steps import (
  all_finite,
  all_finite_per_seed,
  dispatch_spans,
  span_indices,
  train_program,
  zero_sums,
)


def _compile_train_step(run: Group, state, sums) -> Tuple[Any, float]:
  """jit + AOT compile, so compile time is measured apart from the epochs.

  Returns (step_fn, seconds): step_fn(state, sums, idx) trains the K batches
  of idx ((K, batch), or (S, K, batch) for S seeds: host ints). A call with
  fewer than K rows (an epoch's last, ragged span) compiles that shape once,
  on first use.
  """
  k, keys = run.config.steps_per_dispatch, run.step_keys()
  program = train_program(run.config, run.stacked)
  seeds = (len(run.seeds),) if run.stacked else ()
  start = time.perf_counter()
  example = np.zeros(seeds + ((k,) if k > 1 else ()) + (run.config.batch_size,), np.int32)
  compiled = program.lower(state, sums, run.train_data, shard_indices(example, run.mesh),
                           *keys).compile()

  def step_fn(state, sums, idx):
    fn = compiled if idx.shape[-2] == k else program
    idx = idx[..., 0, :] if k == 1 else idx
    return fn(state, sums, run.train_data, shard_indices(idx, run.mesh), *keys)
  return step_fn, time.perf_counter() - start


def _finite(run: Group, state) -> np.ndarray:
  """Per seed: is every saved field of its train state finite?"""
  check = all_finite_per_seed if run.stacked else all_finite
  return np.atleast_1d(to_host(check(checkpoint.state_item(state))))


def _compile_epoch_end(run: Group, state, split: data_lib.Split) -> float:
  """Runs once, results discarded, what each epoch's end compiles on first
  use: the evaluator (on `split`'s first batch), the finiteness check and the
  learning-rate schedule. Their compilation is then timed with the train
  step's, not inside epoch 1 (~1.1 s of a ~10 s speedrun epoch). Returns the
  seconds it took."""
  start = time.perf_counter()
  images, labels, mask = next(data_lib.eval_batches(split, run.config.eval_batch_size))
  batch = shard_batch({"image": images, "label": labels, "mask": mask}, run.mesh)
  jax.block_until_ready(eval_lib.batch_sums(state, batch, run.stacked))
  _finite(run, state)
  float(run.schedule(0))
  return time.perf_counter() - start


def _zero_sums(run: Group):
  return replicate(run.join([zero_sums()] * len(run.seeds)), run.mesh)


def _check_finite(run: Group, state, sums: Dict, step: int) -> None:
  """Raises before a NaN or inf reaches a checkpoint (one host sync per save).

  It runs only where the run saves: at the end of each call (of K steps) that
  passes a multiple of `every_steps`, and at each epoch end. A divergence is
  so found up to a save interval late, and the message names both steps:
  configs/mlp.py (32 steps per call) on 2,000 images (15 steps per epoch)
  diverging at step 2 is found at step 15, before its first save.
  """
  bad_steps = np.atleast_1d(to_host(sums["first_bad_step"]))
  finite = _finite(run, state)
  bad = [i for i in range(len(run.seeds)) if bad_steps[i] >= 0 or not finite[i]]
  if not bad:
    return
  i = bad[0]
  for mngr in run.mngrs:
    checkpoint.wait(mngr)
  at = int(bad_steps[i]) if bad_steps[i] >= 0 else step
  where = ("the loss was NaN or inf at step" if bad_steps[i] >= 0
           else "the train state became NaN or inf by step")
  found = f", found at step {step}" if step != at else ""
  last = run.mngrs[i].latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept" if last is not None
          else "no checkpoint was saved before it")
  reason = (f"training diverged{run.tag(i)}: {where} {at} (epoch "
            f"{(at - 1) // run.steps + 1}){found}; {kept}")
  if run.writer:  # so that `evaluate` says so rather than scoring a stopped run
    run_dir.write_divergence(run.workdirs[i], reason)
  raise UserError(f"{reason}; lower config.optimizer.learning_rate.")


def _save(run: Group, step: int, state, epoch: int, batch: int, sums: Dict) -> None:
  """Saves every seed's checkpoint at `step`: one round, started only once the
  previous round is on disk, so a kill leaves seeds at most one save apart."""
  for mngr in run.mngrs:
    checkpoint.wait(mngr)
  for i, mngr in enumerate(run.mngrs):
    checkpoint.save(mngr, step, run.part(state, i),
                    run.progress(i, epoch, batch, run.part(sums, i)),
                    run.config_records[i])


def _train_epoch(run: Group, state, sums, epoch: int, first_batch: int):
  """Trains batches first_batch.. of `epoch`, saving every `every_steps` steps."""
  config = run.config
  every, batch = config.checkpoint.every_steps, config.batch_size
  # Each seed's order; spans end at run.steps: the ragged last batch is dropped.
  orders_SxN = np.stack([data_lib.epoch_permutation(k["shuffle"], epoch, len(run.train))
                         for k in run.keys]).astype(np.int32)
  orders = orders_SxN if run.stacked else orders_SxN[0]
  spans = dispatch_spans(first_batch, run.steps, config.steps_per_dispatch)
  done = (epoch - 1) * run.steps  # steps before this epoch; reading state.step syncs
  with tqdm(total=run.steps - first_batch, desc=f"epoch {epoch}", leave=False,
            disable=None, file=sys.stderr) as bar:
    for start, stop in spans:
      state, sums = run.step_fn(state, sums, span_indices(orders, start, stop, batch))
      bar.update(stop - start)
      for i, events in enumerate(run.events):
        events.after_span(done + start, done + stop, state, sums, i if run.stacked else None)
      # Save when the span passed a multiple of every_steps (with one step per
      # call: every `every` steps); the epoch end saves in _run_epoch.
      if every and (done + stop) // every > (done + start) // every and stop < run.steps:
        _check_finite(run, state, sums, done + stop)
        _save(run, done + stop, state, epoch, stop, sums)
  return state, sums


def _epoch_metrics(run: Group, state, sums, epoch: int, first_batch: int,
                   times: Tuple[float, float]) -> List[Dict]:
  """Each seed's metrics line: train sums, test (and validation) evaluation."""
  start, train_s = times
  step = epoch * run.steps
  per_seed = lambda tree: jax.tree.map(np.atleast_1d, tree)
  totals = per_seed(to_host(sums))
  evaluate = lambda split: per_seed(eval_lib.split_sums(
      state, split, run.config.eval_batch_size, run.mesh, run.stacked))
  test = evaluate(run.test)
  val = evaluate(run.val) if run.val is not None else None
  trained = (run.steps - first_batch) * run.config.batch_size  # per seed, in this process's life
  lines = []
  for i in range(len(run.seeds)):
    test_i = eval_lib.metrics({k: v[i] for k, v in test.items()})
    metrics = {
        "epoch": epoch, "step": step,
        "learning_rate": float(run.schedule(step - 1)),
        "train_loss": float(totals["loss_sum"][i]) / int(totals["count"][i]),
        "train_accuracy": int(totals["correct"][i]) / int(totals["count"][i]),
        "test_loss": test_i["loss"], "test_accuracy": test_i["accuracy"],
        "test_count": test_i["count"],
    }
    if val is not None:
      val_i = eval_lib.metrics({k: v[i] for k, v in val.items()})
      metrics.update(val_loss=val_i["loss"], val_accuracy=val_i["accuracy"],
                     val_count=val_i["count"])
    lines.append(metrics)
  extra = {"epoch_time_s": time.perf_counter() - start, "train_time_s": train_s,
           "train_images_per_s": trained / train_s}  # each seed's (S x for all)
  return [dict(m, **extra) for m in lines]


def _keep_if_best(run: Group, i: int, step: int, state, metrics: Dict) -> None:
  """With select='best_val': keeps seed i's state of its best validation epoch.

  Strictly better only, so the first of equal epochs is kept, as
  run_dir.selected_index picks it. A redone epoch (resumed after a kill)
  reaches the same accuracy and is not saved twice.
  """
  if not run.best_mngrs or metrics["val_accuracy"] <= run.best_val[i]:
    return
  run.best_val[i] = metrics["val_accuracy"]
  checkpoint.save_best(run.best_mngrs[i], step, run.part(state, i),
                       {"epoch": metrics["epoch"], "val_accuracy": run.best_val[i]},
                       run.config_records[i])


def _run_epoch(run: Group, state, sums, epoch: int, first_batch: int):
  """Trains the rest of `epoch`, evaluates, writes its metrics lines, saves."""
  start = time.perf_counter()
  state, sums = _train_epoch(run, state, sums, epoch, first_batch)
  # Steps are dispatched asynchronously: wait for the last one before timing.
  jax.block_until_ready((state, sums))
  train_s = time.perf_counter() - start
  step = epoch * run.steps
  _check_finite(run, state, sums, step)
  lines = _epoch_metrics(run, state, sums, epoch, first_batch, (start, train_s))
  # The lines go first: a kill before the checkpoints below are durable redoes
  # this epoch, and the resumed run drops the lines (run_dir.keep_epochs).
  for i, metrics in enumerate(lines):
    if run.writer:
      run_dir.append_metrics(run.workdirs[i], metrics)
    run.events[i].epoch(metrics)
    _keep_if_best(run, i, step, state, metrics)
  _save(run, step, state, epoch + 1, 0, _zero_sums(run))
  return state, lines


def _log_epoch(log, m: Dict, who: str = "") -> None:
  val = (f"val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f}  "
         if "val_accuracy" in m else "")
  log(f"{who}epoch {m['epoch']:3d}  train loss {m['train_loss']:.4f} "
      f"acc {m['train_accuracy']:.4f}  {val}test loss {m['test_loss']:.4f} "
      f"acc {m['test_accuracy']:.4f}  {m['epoch_time_s']:.1f}s "
      f"({m['train_images_per_s']:,.0f} img/s)")


def _setup(config, seeds, workdirs, mnist_dir, data, log) -> Tuple[Group, Any, Dict]:
  """The group's data, keys and fresh (stacked) state and sums, on the devices."""
  train, test = data or data_lib.load_mnist(mnist_dir, train_split=config.data.train_split,
                                            test_split=config.data.test_split)
  train, val = data_lib.split_validation(train, config.data.validation_size)
  steps = steps_per_epoch(config, len(train))
  mesh = make_mesh()
  keys = [run_keys(seed) for seed in seeds]
  states = [create_train_state(config, k["init"], steps) for k in keys]
  run = Group(config, list(seeds), list(workdirs), mesh, train, val, test, steps,
              make_schedule(config.optimizer, steps, config.num_epochs),
              replicate({"image": train.images, "label": train.labels}, mesh), keys,
              [rng_data(k, mesh) for k in keys], count_params(states[0].params), log)
  together = f"; {len(seeds)} seeds trained together" if run.stacked else ""
  log(f"model {config.model.name}: {run.num_params:,} parameters; {len(train):,} train "
      f"/ {len(val) if val else 0:,} validation / {len(test):,} test images; "
      f"{steps} steps per epoch{together}")
  return run, replicate(run.join(states), mesh), _zero_sums(run)


def train_runs(config: ml_collections.ConfigDict, seeds: Sequence[int],
               workdirs: Sequence[str], *, mnist_dir: Optional[str] = None,
               data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
               verbose: bool = True, force: bool = False) -> List[Dict]:
  """Trains `config` once per seed, seed i into `workdirs[i]`, in one program.

  A workdir holding this config's run (with its seed) resumes from its newest
  checkpoint; one holding another config's run is refused unless `force`
  (which overwrites it). `data` (train, test) skips loading, for studies that
  train many runs; the validation split, if any, is carved from its train
  split here. Returns, per seed, the selected epoch's metrics (the last, or
  with select='best_val' the best validation epoch's) plus `selected_epoch`,
  `num_params` and `compile_time_s` (the train step's and what each epoch's
  end compiles, for the whole group).
  """
  check_group(seeds, workdirs)
  config_lib.validate(config)
  build_model(config.model)  # rejects an impossible architecture before any work
  check_fits_in_memory(config, len(seeds))  # before XLA is asked to allocate it
  splits.validate_splits(config)  # a bad or empty split, before a workdir is touched
  # One process trains a workdir: a second is refused at once (process 0 holds it).
  with contextlib.ExitStack() as held:
    for workdir in workdirs:
      held.enter_context(workdir_lib.locked(workdir, hold=jax.process_index() == 0))
    return _train_runs(config, seeds, workdirs, mnist_dir, data, verbose, force)


def _train_runs(config, seeds, workdirs, mnist_dir, data, verbose, force) -> List[Dict]:
  log = print if verbose else (lambda *a, **k: None)
  log(describe_devices())
  check_batch_size(config.batch_size)
  check_batch_size(config.eval_batch_size, "eval_batch_size")
  claim_workdirs(workdirs, [seed_config(config, seed) for seed in seeds], force)
  run, state, sums = _setup(config, seeds, workdirs, mnist_dir, data, log)
  run.mngrs = [checkpoint.manager(w, config.checkpoint.max_to_keep) for w in workdirs]
  if config.select == "best_val":
    run.best_mngrs = [checkpoint.best_manager(w) for w in workdirs]
  try:
    resume.align_checkpoints(run.mngrs, workdirs, config.num_epochs)  # before compiling
    run.step_fn, compile_s = _compile_train_step(run, state, sums)
    compile_s += _compile_epoch_end(run, state, run.test)
    log(f"train and eval steps compiled in {compile_s:.1f}s")
    _loop(run, state, sums)
  finally:
    for events in run.events:
      events.close()
    for mngr in run.mngrs + run.best_mngrs:
      checkpoint.finish(mngr)
  return [_final(run, i, compile_s) for i in range(len(seeds))]


def _final(run: Group, i: int, compile_s: float) -> Dict:
  """Seed i's selected epoch line (read back: every epoch's, from before a
  resume too), with what train_runs adds."""
  lines = run_dir.read_metrics(run.workdirs[i])
  metrics = lines[run_dir.selected_index(lines, run.config.select)]
  if run.config.select == "best_val":
    run.log(f"selected epoch {metrics['epoch']}{run.tag(i)} (best validation "
            f"accuracy {metrics['val_accuracy']:.4f}): test accuracy "
            f"{metrics['test_accuracy']:.4f}")
  return dict(metrics, selected_epoch=metrics["epoch"], num_params=run.num_params,
              compile_time_s=compile_s)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mnist_dir: Optional[str] = None,
                       data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                       verbose: bool = True, force: bool = False) -> Dict:
  """Trains `config` (its own seed), evaluates on the test set each epoch,
  writes `workdir`: train_runs for one run. Returns what train_runs returns
  for it."""
  return train_runs(config, [config.seed], [workdir], mnist_dir=mnist_dir, data=data,
                    verbose=verbose, force=force)[0]


def _loop(run: Group, state, sums) -> None:
  """The epochs left to train."""
  state, sums, first_epoch, first_batch = resume.start(run, state, sums)
  if first_epoch > run.config.num_epochs:
    run.log("the run is already complete: nothing to train")
    return
  start_step = (first_epoch - 1) * run.steps + first_batch
  # One writer per seed; only the first profiles (one jax.profiler trace at a time).
  run.events = [metric_writer.RunWriter(w, seed_config(run.config, seed), start_step,
                                        run.writer, profile=i == 0)
                for i, (w, seed) in enumerate(zip(run.workdirs, run.seeds))]
  for i, events in enumerate(run.events):
    events.resume_from(sums, i if run.stacked else None)
  for epoch in range(first_epoch, run.config.num_epochs + 1):
    state, lines = _run_epoch(run, state, sums, epoch, first_batch)
    for i, metrics in enumerate(lines):
      _log_epoch(run.log, metrics, f"seed {run.seeds[i]}: " if run.stacked else "")
    sums, first_batch = _zero_sums(run), 0
  for i, events in enumerate(run.events):
    events.final_state(run.part(state, i), run.test, run.mesh,
                       run.config.num_epochs * run.steps)
