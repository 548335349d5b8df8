"""The S >= 1 seeds of one config that train as one program (`SeedStack`).

What stays fixed while they train, and how the loop holds per-seed values:
with one seed, that run's own state, sums and keys (no vmap: one seed trains
the plain, unbatched program); with several, the seeds' values stacked along
a leading axis, on which the step functions run under jax.vmap. `join_seeds`,
`SeedStack.part` and `SeedStack.indices` are the only places that know the
difference. Each seed is one run: its own workdir, config.json (with its
seed), metrics.jsonl and checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import os
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
from mnist_jax.engine.mesh import replicate, shard_indices
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
