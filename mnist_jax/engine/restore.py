"""A finished (or interrupted) run's state, restored from its checkpoints."""

from __future__ import annotations

from typing import Dict, Optional

import jax
import ml_collections

from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.engine import checkpoint
from mnist_jax.engine.evaluate import evaluate
from mnist_jax.engine.mesh import abstract_replicated, make_mesh
from mnist_jax.engine.state import TrainState, create_train_state


def selected_checkpoint(config: ml_collections.ConfigDict) -> str:
  """'best' for runs that select by validation accuracy, else 'last'."""
  return "best" if config.select == "best_val" else "last"


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
  # Only shapes, dtypes and placement are needed: jax.eval_shape traces the
  # initialisation without running it (an eager init compiles and runs dozens
  # of small programs, ~0.5 s of `predict`).
  template = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0),
                                                       steps_per_epoch=1))
  return checkpoint.restore_latest(workdir, abstract_replicated(template, mesh or make_mesh()),
                                   which)
