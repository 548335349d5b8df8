"""The S >= 1 seeds of one config that train as one program (`SeedStack`).

What stays fixed while they train, and how the loop holds per-seed values:
with one seed, that run's own state, sums and keys (no vmap: one seed trains
the plain, unbatched program); with several, the seeds' values stacked along
a leading axis, on which the step functions run under jax.vmap. `join_seeds`,
`SeedStack.part` and `SeedStack.indices` are the only places that know the
difference. Each seed is one run: its own workdir, config.json (with its
seed), metrics.jsonl and checkpoints, saved in rounds (`SeedStack.save`);
`align_checkpoints` and `resume` find where the seeds start again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.engine.mesh import replicate, shard_indices, to_host
from mnist_jax.engine.state import TrainState, stack, stack_states, unstack
from mnist_jax.engine.steps import Batch, span_indices


@dataclasses.dataclass
class SeedStack:
  """Everything the loop needs that stays fixed while the seeds train.

  Per-seed lists have one entry per seed; device values (state, sums, step
  keys) are one run's, or with several seeds stacked along a leading axis.
  """
  config: ml_collections.ConfigDict
  seeds: List[int]
  workdirs: List[str]
  mesh: Any
  train: data_lib.Split
  val: Optional[data_lib.Split]  # None without config.data.validation_size
  test: data_lib.Split
  steps: int  # per epoch
  schedule: Any  # optax schedule: the learning rate of each step, for the metrics line
  train_data: Batch  # the training images and labels, on every device
  keys: List[Dict[str, jax.Array]]  # run_keys(seed), per seed
  rng_data: List[jax.Array]  # per seed: shuffle and dropout keys' data, checkpointed
  num_params: int
  log: Any
  mngrs: List[Any] = dataclasses.field(default_factory=list)  # orbax, per seed
  best_mngrs: List[Any] = dataclasses.field(default_factory=list)  # select='best_val'
  best_val: List[float] = dataclasses.field(default_factory=list)  # per seed

  @functools.cached_property
  def config_records(self) -> List[Dict]:
    """Per seed: the config its checkpoints record (checkpoint.config_record)."""
    return [checkpoint.config_record(run_dir.config_as_dict(seed_config(self.config, s)))
            for s in self.seeds]

  @property
  def stacked(self) -> bool:
    return len(self.seeds) > 1

  @property
  def writer(self) -> bool:
    """Only process 0 writes config.json and metrics.jsonl."""
    return jax.process_index() == 0

  def join(self, trees: Sequence[Any]):
    """Per-seed trees as the loop holds them (see `join_seeds`)."""
    return join_seeds(trees)

  def entry(self, i: int) -> Optional[int]:
    """Seed i's index along the leading axis of stacked values; None for one seed."""
    return i if self.stacked else None

  def part(self, tree, i: int):
    """Seed i's entry of a device value (the value itself for one seed)."""
    return unstack(tree, i) if self.stacked else tree

  def step_keys(self) -> Tuple[jax.Array, jax.Array]:
    """The dropout and augmentation keys the train call takes."""
    return tuple(self.join([k[name] for k in self.keys]) for name in ("dropout", "augment"))

  def epoch_orders(self, epoch: int) -> np.ndarray:
    """Each seed's order of the training images in `epoch` (N), stacked (SxN)
    for several seeds."""
    orders_SxN = np.stack([data_lib.epoch_permutation(k["shuffle"], epoch, len(self.train))
                           for k in self.keys]).astype(np.int32)
    return orders_SxN if self.stacked else orders_SxN[0]

  def indices(self, orders: np.ndarray, start: int, stop: int) -> jax.Array:
    """Batches start..stop-1 of the epoch's `orders` as the train call takes
    them, on the devices: (batch) for one step per call, else (K, batch); with
    a leading seed axis for several seeds."""
    idx = span_indices(orders, start, stop, self.config.batch_size)
    return shard_indices(idx[..., 0, :] if self.config.steps_per_dispatch == 1 else idx,
                         self.mesh)

  def progress(self, i: int, epoch: int, batch: int, sums_i: Dict) -> Dict:
    """Where seed i's training stands: the next batch to train is `batch` of `epoch`."""
    return {"epoch": replicate(np.int32(epoch), self.mesh),
            "batch": replicate(np.int32(batch), self.mesh),
            "sums": sums_i, "rng": self.rng_data[i]}

  def save(self, step: int, state, epoch: int, batch: int, sums: Dict) -> None:
    """Saves every seed's checkpoint at `step` (the next batch to train is
    `batch` of `epoch`): one round, started only once the previous round is
    on disk, so a kill leaves seeds at most one save apart."""
    for mngr in self.mngrs:
      checkpoint.wait(mngr)
    for i, mngr in enumerate(self.mngrs):
      checkpoint.save(mngr, step, self.part(state, i),
                      self.progress(i, epoch, batch, self.part(sums, i)),
                      self.config_records[i])

  def keep_if_best(self, i: int, step: int, state, metrics: Dict) -> None:
    """With select='best_val': keeps seed i's state of its best validation epoch.

    Strictly better only, so the first of equal epochs is kept, as
    run_dir.selected_index picks it. A redone epoch (resumed after a kill)
    reaches the same accuracy and is not saved twice.
    """
    if not self.best_mngrs or metrics["val_accuracy"] <= self.best_val[i]:
      return
    self.best_val[i] = metrics["val_accuracy"]
    checkpoint.save_best(self.best_mngrs[i], step, self.part(state, i),
                         {"epoch": metrics["epoch"], "val_accuracy": self.best_val[i]},
                         self.config_records[i])

  def finish_checkpoints(self) -> None:
    """Waits for every seed's saves, then closes its checkpoint managers."""
    for mngr in self.mngrs + self.best_mngrs:
      checkpoint.finish(mngr)

  def tag(self, i: int) -> str:
    """How messages name seed i: nothing for a single run."""
    return f" for seed {self.seeds[i]} ({self.workdirs[i]})" if self.stacked else ""


def join_seeds(trees: Sequence[Any]):
  """Per-seed trees (train states, sums, keys) as the loop holds them: the
  one tree for one seed, else stacked along a leading axis."""
  if len(trees) == 1:
    return trees[0]
  return (stack_states if isinstance(trees[0], TrainState) else stack)(trees)


def rng_data(keys: Dict[str, jax.Array], mesh) -> jax.Array:
  """A run's shuffle and dropout keys' data: saved with each checkpoint, so a
  workdir is never resumed with another seed's keys."""
  return replicate(jax.random.key_data(jnp.stack([keys["shuffle"], keys["dropout"]])),
                   mesh)


def check_seeds(seeds: Sequence[int], workdirs: Sequence[str]) -> None:
  """One workdir per seed, each listed once."""
  if len(seeds) != len(workdirs) or not seeds:
    raise UserError(f"got {len(seeds)} seeds and {len(workdirs)} workdirs: give one "
                    "workdir per seed.")
  if len(set(seeds)) != len(seeds):
    raise UserError(f"seeds {list(seeds)} list a seed twice: list each seed once.")
  paths = [os.path.realpath(w) for w in workdirs]
  if len(set(paths)) != len(paths):
    raise UserError("a workdir is listed twice: give each seed its own workdir.")


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """`config` with `seed` (a copy, unless it already has that seed)."""
  if int(config.seed) == int(seed):
    return config
  copy = ml_collections.ConfigDict(config.to_dict())
  copy.seed = int(seed)
  return copy


def claim_workdirs(workdirs: Sequence[str], configs: Sequence[ml_collections.ConfigDict],
                   force: bool) -> None:
  """Process 0 claims every workdir (run_dir.claim); the others wait.
  Without `force`, each workdir's checkpoints are first checked to have been
  trained by its config, before any config.json is written: by every process,
  since opening orbax's checkpoint manager is a collective step of a
  multi-process run (all processes read the same files, so all agree)."""
  if not force:
    for workdir, config in zip(workdirs, configs):
      checkpoint.check_resumable(workdir, run_dir.config_as_dict(config))
  if jax.process_index() == 0:
    for workdir, config in zip(workdirs, configs):
      run_dir.claim(workdir, config, force)
  multihost_utils.sync_global_devices("mnist_jax: workdir claimed")


# Where the seeds start: fresh, or from the checkpoints they share. Each seed
# keeps its own checkpoints, saved in rounds (SeedStack.save). A SIGKILL during
# a round can leave some seeds one save ahead of the others, so they resume
# from the newest step every seed has, and the checkpoints past it (one at most
# per seed) are deleted: the resumed seeds train them again, to the same bits.
# Anything else (a seed two saves ahead, or a seed finished while another is
# not) means the workdirs were not trained together, and is refused.


def _refuse_finished_beside_unfinished(workdirs: Sequence[str], num_epochs: int) -> None:
  finished = [run_dir.is_finished(w, num_epochs) for w in workdirs]
  if any(finished) and not all(finished):
    done, todo = workdirs[finished.index(True)], workdirs[finished.index(False)]
    raise UserError(f"{done!r} holds a finished run but {todo!r} does not: a group "
                    "resumes only runs it trained together; train the unfinished "
                    "seeds on their own, or the group in new workdirs.")


def align_checkpoints(mngrs: Sequence, workdirs: Sequence[str], num_epochs: int) -> None:
  """Makes each seed's newest checkpoint the newest step all seeds have (or
  none: a fresh start), deleting the one save a seed may be ahead by."""
  if len(mngrs) == 1:
    return
  steps = [set(m.all_steps()) for m in mngrs]
  if not any(steps):
    return
  _refuse_finished_beside_unfinished(workdirs, num_epochs)
  shared = set.intersection(*steps)
  newest = max(shared) if shared else 0
  ahead: List[List[int]] = [sorted(s for s in seed_steps if s > newest)
                            for seed_steps in steps]
  for workdir, extra in zip(workdirs, ahead):
    if len(extra) > 1:
      where = f"step {newest}" if shared else "a fresh start"
      raise UserError(f"the checkpoints of {workdir!r} go {len(extra)} saves past "
                      f"{where}, the newest all seeds share: these workdirs were not "
                      "trained together; resume each on its own, or train the group "
                      "in new workdirs.")
  for mngr, extra in zip(mngrs, ahead):
    for step in extra:
      mngr.delete(step)


def _drop_past_metrics(stack: SeedStack) -> None:
  """Deletes, saying so, the checkpoints past the epochs a seed's
  metrics.jsonl records (its last line cut by a crash or a full disk) when an
  older checkpoint lies within them: the run resumes from that one and trains
  the steps again, to the same bits. With none within, nothing is deleted
  (run_dir.keep_epochs then says what is missing)."""
  for workdir, mngr in zip(stack.workdirs, stack.mngrs):
    recorded = len(run_dir.read_metrics(workdir, notice=False))  # keep_epochs says it
    steps = sorted(mngr.all_steps())
    past = [s for s in steps if s // stack.steps > recorded]
    within = [s for s in steps if s // stack.steps <= recorded]
    if not (past and within):
      continue
    print(f"warning: {workdir}/{run_dir.METRICS_FILE} records {recorded} epoch(s) and "
          f"the checkpoints of steps {', '.join(map(str, past))} go past them: deleting "
          f"those (intact) checkpoints to resume from step {within[-1]}; the run trains "
          "their steps again, to the same result.", file=sys.stderr)
    for step in past:
      mngr.delete(step)


def _restore(stack: SeedStack, state, sums):
  """Each seed's newest checkpoint, as the loop holds them: (state, progress)
  with the seeds' states and sums stacked, or None for a fresh start."""
  restored = [checkpoint.restore(mngr, stack.part(state, i),
                                 stack.progress(i, 1, 0, stack.part(sums, i)))
              for i, mngr in enumerate(stack.mngrs)]
  if all(r is None for r in restored):
    return None
  for i, r in enumerate(restored):
    if r is None or not np.array_equal(to_host(r[1]["rng"]), to_host(stack.rng_data[i])):
      raise UserError(f"the checkpoints in {stack.workdirs[i]!r} come from another seed "
                      "than its config.json: use a new --workdir.")
  where = [(int(to_host(p["epoch"])), int(to_host(p["batch"]))) for _, p in restored]
  if len(set(where)) > 1:
    raise UserError(f"the seeds' checkpoints stand at different (epoch, batch) {where}: "
                    "train the group again in new workdirs.")
  if not stack.stacked:
    return restored[0]
  join = lambda trees: replicate(stack.join(to_host(trees)), stack.mesh)
  return (join([s for s, _ in restored]),
          dict(restored[0][1], sums=join([p["sums"] for _, p in restored])))


def resume(stack: SeedStack, state, sums):
  """Resumes from the newest checkpoint if there is one: (state, sums, epoch, batch).

  Several seeds' checkpoints must have been aligned first (align_checkpoints).
  Drops metric lines past it (a kill after an epoch's lines, before its
  checkpoints were durable, redoes that epoch) and reads each seed's best
  validation accuracy so far (select='best_val').
  """
  _drop_past_metrics(stack)
  restored = _restore(stack, state, sums)
  epoch, batch = 1, 0
  if restored is not None:
    state, progress = restored
    sums = progress["sums"]
    epoch, batch = int(to_host(progress["epoch"])), int(to_host(progress["batch"]))
    stack.log(f"resuming from the checkpoint at step {(epoch - 1) * stack.steps + batch} "
              f"(epoch {epoch}, batch {batch})")
  for workdir in stack.workdirs if stack.writer else ():
    run_dir.keep_epochs(workdir, epoch - 1)
  for mngr in stack.best_mngrs:
    best = checkpoint.best_selection(mngr)
    stack.best_val.append(-1.0 if best is None else float(best["val_accuracy"]))
  return state, sums, epoch, batch
