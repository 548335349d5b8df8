"""Training and evaluation of S >= 1 runs: `train_runs(config, seeds, workdirs)`,
and `train_and_evaluate(config, workdir)`, its one-run form, the entry point.

`train_runs` reads top to bottom: check, lock the workdirs, set up, restore,
then for each epoch and each dispatched call of the train program
(engine/steps.train_program) the NaN check, profiler and TensorBoard points
and the periodic save; at each epoch's end evaluation, one metrics line per
seed (engine/metric_writer.MetricWriter: metrics.jsonl, TensorBoard and the
log) and a save; at the end the misclassified digits.

The train step is a pure function (state, batch, rng) -> (state, metrics),
jit-compiled once ahead of the loop with the state donated. Each epoch is a
Python loop of jitted steps rather than one `lax.scan`: on the project's CPUs
a whole epoch in one scan runs 7x slower for a CNN (docs/decisions.md).
`config.steps_per_dispatch` = K > 1 runs K steps per call, as a scan over K
batches' indices: for a model whose step is about a millisecond (the MLP) the
host's per-call work is then paid once per K steps (docs/performance.md).

One seed trains its one state (no vmap). Several seeds train as one program
(engine/seed_stack.SeedStack, the only code that knows about stacking):
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
checkpoint (of several seeds: the newest step all have, engine/seed_stack.py) and
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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

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
from mnist_jax.engine import checkpoint, metric_writer
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.engine.mesh import (
  check_batch_size,
  describe_devices,
  make_mesh,
  replicate,
  shard_batch,
  to_host,
)
from mnist_jax.engine.seed_stack import (SeedStack, align_checkpoints, check_seeds,
                                         claim_workdirs, resume, rng_data, seed_config)
from mnist_jax.engine.state import (check_fits_in_memory, create_train_state, run_keys,
                                    steps_per_epoch)
from mnist_jax.engine.steps import (
  all_finite,
  all_finite_per_seed,
  dispatch_spans,
  load_train_step,
  make_train_step,
  train_program,
  zero_sums,
)


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
  end compiles, for all seeds).
  """
  log = print if verbose else (lambda *a, **k: None)
  _check(config, seeds, workdirs)
  with _locked(workdirs):
    log(describe_devices())
    claim_workdirs(workdirs, [seed_config(config, seed) for seed in seeds], force)
    stack, state, zeros = _setup(config, seeds, workdirs, mnist_dir, data, log)
    sums, keys, writers = replicate(zeros, stack.mesh), stack.step_keys(), []
    try:
      align_checkpoints(stack.mngrs, workdirs, config.num_epochs)  # before compiling
      program, compiled, compile_s = _compile(stack, state, sums)
      state, sums, first_epoch, first_batch = resume(stack, state, sums)
      writers = _open_writers(stack, first_epoch, first_batch, sums)
      every, k, steps = config.checkpoint.every_steps, config.steps_per_dispatch, stack.steps
      for epoch in range(first_epoch, config.num_epochs + 1):
        start, done = time.perf_counter(), (epoch - 1) * steps  # steps before this epoch
        orders = stack.epoch_orders(epoch)
        with _progress_bar(epoch, steps - first_batch) as bar:
          for begin, end in dispatch_spans(first_batch, steps, k):
            train_call = compiled if end - begin == k else program  # a ragged last span
            state, sums = train_call(state, sums, stack.train_data,
                                     stack.indices(orders, begin, end), *keys)
            bar.update(end - begin)
            for i, writer in enumerate(writers):  # TensorBoard's loss points, the profiler
              writer.after_span(done + begin, done + end, state, sums, stack.entry(i))
            # Saves when the span passed a multiple of every_steps; the epoch's end below.
            if every and (done + end) // every > (done + begin) // every and end < steps:
              _check_finite(stack, state, sums, done + end)
              stack.save(done + end, state, epoch, end, sums)
        jax.block_until_ready((state, sums))  # steps run asynchronously: time them all
        times = (start, time.perf_counter() - start)
        _check_finite(stack, state, sums, epoch * steps)
        # The lines go first: a kill before the checkpoints below are durable redoes
        # this epoch, and the resumed run drops the lines (run_dir.keep_epochs).
        lines = _epoch_metrics(stack, state, sums, epoch, first_batch, times)
        for i, metrics in enumerate(lines):
          writers[i].write_epoch(metrics)  # metrics.jsonl, TensorBoard, the log
          stack.keep_if_best(i, epoch * steps, state, metrics)
        stack.save(epoch * steps, state, epoch + 1, 0, replicate(zeros, stack.mesh))
        sums, first_batch = replicate(zeros, stack.mesh), 0
      for i, writer in enumerate(writers):  # the misclassified digits
        writer.final_state(stack.part(state, i), stack.test, stack.mesh, epoch * steps)
    finally:
      for writer in writers:
        writer.close()
      stack.finish_checkpoints()
    return [_final(stack, i, compile_s) for i in range(len(seeds))]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       mnist_dir: Optional[str] = None,
                       data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                       verbose: bool = True, force: bool = False) -> Dict:
  """Trains `config` (its own seed), evaluates on the test set each epoch,
  writes `workdir`: train_runs for one run. Returns what train_runs returns
  for it."""
  return train_runs(config, [config.seed], [workdir], mnist_dir=mnist_dir, data=data,
                    verbose=verbose, force=force)[0]


def _check(config: ml_collections.ConfigDict, seeds: Sequence[int],
           workdirs: Sequence[str]) -> None:
  """Refuses what cannot train, before a workdir is touched."""
  check_seeds(seeds, workdirs)
  config_lib.validate(config)
  build_model(config.model)  # an impossible architecture, before any work
  check_fits_in_memory(config, len(seeds))  # before XLA is asked to allocate it
  splits.validate_splits(config)  # a bad or empty split
  check_batch_size(config.batch_size)
  check_batch_size(config.eval_batch_size, "eval_batch_size")
  load_train_step(config.train_step)  # a step that cannot be loaded


@contextlib.contextmanager
def _locked(workdirs: Sequence[str]) -> Iterator[None]:
  """One process trains a workdir: a second is refused at once (process 0
  holds the lock of each)."""
  with contextlib.ExitStack() as held:
    for workdir in workdirs:
      held.enter_context(workdir_lib.locked(workdir, hold=jax.process_index() == 0))
    yield


def _setup(config, seeds, workdirs, mnist_dir, data, log) -> Tuple[SeedStack, Any, Dict]:
  """The seeds' data, keys and checkpoint managers, their fresh (stacked)
  state on the devices, and their running sums at an epoch's start (zeros,
  on the host: each epoch puts a fresh copy on the devices, which the train
  program donates)."""
  train, test = data or data_lib.load_mnist(mnist_dir, train_split=config.data.train_split,
                                            test_split=config.data.test_split)
  train, val = data_lib.split_validation(train, config.data.validation_size)
  steps = steps_per_epoch(config, len(train))
  mesh = make_mesh()
  keys = [run_keys(seed) for seed in seeds]
  states = [create_train_state(config, k["init"], steps) for k in keys]
  stack = SeedStack(config, list(seeds), list(workdirs), mesh, train, val, test, steps,
                    make_schedule(config.optimizer, steps, config.num_epochs),
                    replicate({"image": train.images, "label": train.labels}, mesh), keys,
                    [rng_data(k, mesh) for k in keys], count_params(states[0].params), log)
  together = f"; {len(seeds)} seeds trained together" if stack.stacked else ""
  log(f"model {config.model.name}: {stack.num_params:,} parameters; {len(train):,} train "
      f"/ {len(val) if val else 0:,} validation / {len(test):,} test images; "
      f"{steps} steps per epoch{together}")
  stack.mngrs = [checkpoint.manager(w, config.checkpoint.max_to_keep) for w in workdirs]
  if config.select == "best_val":
    stack.best_mngrs = [checkpoint.best_manager(w) for w in workdirs]
  zeros = zero_sums(make_train_step(config), states[0], config.batch_size, stack.train_data)
  return (stack, replicate(stack.join(states), mesh),
          to_host(stack.join([zeros] * len(seeds))))


def _progress_bar(epoch: int, total: int) -> tqdm:
  """The epoch's steps on stderr, when it is a terminal."""
  return tqdm(total=total, desc=f"epoch {epoch}", leave=False, disable=None,
              file=sys.stderr)


def _compile(stack: SeedStack, state, sums) -> Tuple[Any, Any, float]:
  """(program, compiled, seconds): the train program (engine/steps.py), jitted,
  and compiled ahead of the loop for K = steps_per_dispatch steps per call,
  with what each epoch's end compiles, so compile time is measured apart from
  the epochs. An epoch's ragged last span (fewer than K steps) calls
  `program`, which compiles that shape once, on first use."""
  k = stack.config.steps_per_dispatch
  program = train_program(stack.config, stack.stacked)
  # Indices of the shape of every full span (K batches), whatever the epoch's length.
  span = k * stack.config.batch_size
  orders = np.zeros(stack.epoch_orders(1).shape[:-1] + (span,), np.int32)
  idx = stack.indices(orders, 0, k)
  start = time.perf_counter()
  compiled = program.lower(state, sums, stack.train_data, idx, *stack.step_keys()).compile()
  _compile_epoch_end(stack, state, stack.test)
  compile_s = time.perf_counter() - start
  stack.log(f"train and eval steps compiled in {compile_s:.1f}s")
  return program, compiled, compile_s


def _finite(stack: SeedStack, state) -> np.ndarray:
  """Per seed: is every saved field of its train state finite?"""
  check = all_finite_per_seed if stack.stacked else all_finite
  return np.atleast_1d(to_host(check(checkpoint.state_item(state))))


def _compile_epoch_end(stack: SeedStack, state, split: data_lib.Split) -> None:
  """Runs once, results discarded, what each epoch's end compiles on first
  use: the evaluator (on `split`'s first batch), the finiteness check and the
  learning-rate schedule. Their compilation is then timed with the train
  step's, not inside epoch 1 (~1.1 s of a ~10 s speedrun epoch)."""
  images, labels, mask = next(data_lib.eval_batches(split, stack.config.eval_batch_size))
  batch = shard_batch({"image": images, "label": labels, "mask": mask}, stack.mesh)
  jax.block_until_ready(eval_lib.batch_sums(state, batch, stack.stacked))
  _finite(stack, state)
  float(stack.schedule(0))


def _open_writers(stack: SeedStack, first_epoch: int, first_batch: int,
                  sums: Dict) -> List[metric_writer.MetricWriter]:
  """One metric writer per seed, none if the run is already complete; only
  the first seed's profiles (one jax.profiler trace at a time). `sums`: the
  epoch's sums the run (re)starts with."""
  if first_epoch > stack.config.num_epochs:
    stack.log("the run is already complete: nothing to train")
    return []
  start_step = (first_epoch - 1) * stack.steps + first_batch
  writers = [metric_writer.MetricWriter(
      w, seed_config(stack.config, seed), start_step, stack.writer, profile=i == 0,
      log=stack.log, who=f"seed {seed}: " if stack.stacked else "")
      for i, (w, seed) in enumerate(zip(stack.workdirs, stack.seeds))]
  for i, writer in enumerate(writers):
    writer.resume_from(sums, stack.entry(i))
  return writers


def _check_finite(stack: SeedStack, state, sums: Dict, step: int) -> None:
  """Raises before a NaN or inf reaches a checkpoint (one host sync per save).

  It runs only where the run saves: at the end of each call (of K steps) that
  passes a multiple of `every_steps`, and at each epoch end. A divergence is
  so found up to a save interval late, and the message names both steps:
  configs/mlp.py (32 steps per call) on 2,000 images (15 steps per epoch)
  diverging at step 2 is found at step 15, before its first save.
  """
  bad_steps = np.atleast_1d(to_host(sums["first_bad_step"]))
  finite = _finite(stack, state)
  bad = [i for i in range(len(stack.seeds)) if bad_steps[i] >= 0 or not finite[i]]
  if not bad:
    return
  i = bad[0]
  for mngr in stack.mngrs:
    checkpoint.wait(mngr)
  at = int(bad_steps[i]) if bad_steps[i] >= 0 else step
  where = ("the loss was NaN or inf at step" if bad_steps[i] >= 0
           else "the train state became NaN or inf by step")
  found = f", found at step {step}" if step != at else ""
  last = stack.mngrs[i].latest_step()
  kept = (f"the last good checkpoint (step {last}) is kept" if last is not None
          else "no checkpoint was saved before it")
  reason = (f"training diverged{stack.tag(i)}: {where} {at} (epoch "
            f"{(at - 1) // stack.steps + 1}){found}; {kept}")
  if stack.writer:  # so that `evaluate` says so rather than scoring a stopped run
    run_dir.write_divergence(stack.workdirs[i], reason)
  raise UserError(f"{reason}; lower config.optimizer.learning_rate.")


def _epoch_metrics(stack: SeedStack, state, sums, epoch: int, first_batch: int,
                   times: Tuple[float, float]) -> List[Dict]:
  """Each seed's metrics line: train_<key> for every measurement the train
  step sums (per example), test_<key> (and val_<key>) for every one the
  evaluator sums, the learning rate and timings."""
  start, train_s = times
  step = epoch * stack.steps
  per_seed = lambda tree: jax.tree.map(np.atleast_1d, tree)
  train = per_seed(to_host({k: v for k, v in sums.items() if k != "first_bad_step"}))
  evaluate = lambda split: per_seed(eval_lib.split_sums(
      state, split, stack.config.eval_batch_size, stack.mesh, stack.stacked))
  evaluated = {"test": evaluate(stack.test)}
  if stack.val is not None:
    evaluated["val"] = evaluate(stack.val)
  trained = (stack.steps - first_batch) * stack.config.batch_size  # in this process's life
  lines = []
  for i in range(len(stack.seeds)):
    metrics = {"epoch": epoch, "step": step,
               "learning_rate": float(stack.schedule(step - 1))}
    count = int(train["count"][i])
    metrics.update({f"train_{k}": float(v[i]) / count for k, v in train.items()
                    if k != "count"})
    for name, totals in evaluated.items():
      measured = eval_lib.metrics({k: v[i] for k, v in totals.items()})
      metrics.update({f"{name}_{k}": v for k, v in measured.items()})
    lines.append(metrics)
  timings = {"epoch_time_s": time.perf_counter() - start, "train_time_s": train_s,
             "train_images_per_s": trained / train_s}  # each seed's (S x for all)
  return [dict(m, **timings) for m in lines]


def _final(stack: SeedStack, i: int, compile_s: float) -> Dict:
  """Seed i's selected epoch line (read back: every epoch's, from before a
  resume too), with what train_runs adds."""
  lines = run_dir.read_metrics(stack.workdirs[i])
  metrics = lines[run_dir.selected_index(lines, stack.config.select)]
  if stack.config.select == "best_val":
    stack.log(f"selected epoch {metrics['epoch']}{stack.tag(i)} (best validation "
              f"accuracy {metrics['val_accuracy']:.4f}): test accuracy "
              f"{metrics['test_accuracy']:.4f}")
  return dict(metrics, selected_epoch=metrics["epoch"], num_params=stack.num_params,
              compile_time_s=compile_s)
