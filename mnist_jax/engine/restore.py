"""A finished (or interrupted) run's state, restored from its checkpoints."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import jax
import ml_collections

from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.engine.evaluate import evaluate
from mnist_jax.engine.mesh import abstract_replicated, make_mesh
from mnist_jax.engine.state import TrainState, create_train_state


def selected_checkpoint(config: ml_collections.ConfigDict) -> str:
  """'best' for runs that select by validation accuracy, else 'last'."""
  return "best" if config.select == "best_val" else "last"


def restore_and_evaluate(workdir: str, *, mnist_dir: Optional[str] = None) -> Dict:
  """Restores a run's selected checkpoint (see selected_checkpoint) and
  evaluates it on the test set: the evaluator's loss, accuracy and count,
  with `step` (the checkpoint's), `position` (its epoch, in words) and
  `final_step` (the run's final checkpoint's; None if the run is unfinished)."""
  config = run_dir.read_config(workdir)
  refuse_diverged(workdir)
  test = data_lib.load_split(config.data.test_split, mnist_dir)
  mesh = make_mesh()
  state, step = restore_checkpoint(workdir, config, mesh, which=selected_checkpoint(config))
  result = evaluate(state, test, config.eval_batch_size, mesh)
  if not math.isfinite(result["loss"]):
    raise UserError(f"the checkpoint of step {step} in {workdir!r} scores a test loss of "
                    f"{result['loss']}: its state diverged; train the run again with a "
                    "lower config.optimizer.learning_rate (train ... --force).")
  lines = run_dir.read_metrics(workdir)
  return dict(result, step=step, position=describe_step(step, lines),
              final_step=final_step(config, lines))


def refuse_diverged(workdir: str) -> None:
  """A UserError for a run stopped by a NaN or inf: its last good checkpoint
  is not a result."""
  reason = run_dir.read_divergence(workdir)
  if reason is not None:
    raise UserError(f"{workdir!r} stopped without a result ({reason}): train it again "
                    "with a lower config.optimizer.learning_rate (`train ... --force` "
                    "deletes its last good checkpoints).")


def describe_step(step: int, lines: List[Dict]) -> str:
  """Where `step` lies in a run with epoch lines `lines`: 'after epoch E' or
  'epoch E, batch B' ('' if the run has no epoch line to tell)."""
  per_epoch = int(lines[0]["step"]) // lines[0]["epoch"] if lines else 0
  if per_epoch <= 0:
    return ""
  epoch, batch = divmod(step, per_epoch)
  return f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def final_step(config: ml_collections.ConfigDict, lines: List[Dict]) -> Optional[int]:
  """The step of the checkpoint a finished run reports (the selected epoch's
  end); None while the run is unfinished."""
  epochs = [m["epoch"] for m in lines]
  if epochs[:config.num_epochs] != list(range(1, config.num_epochs + 1)):
    return None
  reported = lines[:config.num_epochs]
  return reported[run_dir.selected_index(reported, config.select)]["step"]


def restore_checkpoint(workdir: str, config: ml_collections.ConfigDict,
                       mesh=None, which: str = "last") -> Tuple[TrainState, int]:
  """(state, step) of the run's last saved TrainState ('last'), or that of its
  best validation epoch ('best'), replicated over `mesh` (any device count).
  A checkpoint trained by another config than `config` is a UserError."""
  # Only shapes, dtypes and placement are needed: jax.eval_shape traces the
  # initialisation without running it (an eager init compiles and runs dozens
  # of small programs, ~0.5 s of `predict`).
  template = jax.eval_shape(lambda: create_train_state(config, jax.random.key(0),
                                                       steps_per_epoch=1))
  return checkpoint.restore_latest(workdir, abstract_replicated(template, mesh or make_mesh()),
                                   which, run_dir.config_as_dict(config))


def restore_state(workdir: str, config: ml_collections.ConfigDict,
                  mesh=None, which: str = "last") -> TrainState:
  """restore_checkpoint's state alone."""
  return restore_checkpoint(workdir, config, mesh, which)[0]
