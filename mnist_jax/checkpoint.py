"""Saving and restoring the train state with orbax.

A checkpoint has two items: `state` (params, optimiser state, step: all that
evaluation needs) and `progress` (where training stands: the next epoch and
batch, the epoch's running metric sums, the RNG keys), so that a resumed run
continues exactly where the saved one was. Orbax writes each step to a
temporary folder and renames it when complete, so a kill mid-save leaves the
previous checkpoint as the latest; with several processes, each writes its
own shards and the primary process commits.

Restoring takes the shardings of a template, so a checkpoint saved on N
devices restores onto any other device count.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from mnist_jax.errors import UserError
from mnist_jax.run_dir import checkpoint_dir


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state, progress) -> None:
  """Starts an asynchronous save; `mngr.wait_until_finished()` before exit."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          progress=ocp.args.StandardSave(progress)))


def _abstract(tree):
  """Shapes, dtypes and shardings of `tree`: where restored arrays will live."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore(mngr: ocp.CheckpointManager, template_state,
            template_progress) -> Optional[Tuple[Any, Any]]:
  """(state, progress) of the newest checkpoint, or None if there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(template_state)),
      progress=ocp.args.StandardRestore(_abstract(template_progress))))
  return restored["state"], restored["progress"]


def restore_latest(workdir: str, template_state):
  """The newest saved train state, placed like `template_state`."""
  mngr = manager(workdir)
  step = mngr.latest_step()
  if step is None:
    raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}: train the run "
                    "first (python -m mnist_jax train ...).")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(template_state))))
  mngr.close()
  return restored["state"]
