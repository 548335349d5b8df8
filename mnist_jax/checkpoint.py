"""Saving and restoring the train state with orbax."""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp

from mnist_jax.errors import UserError
from mnist_jax.run_dir import checkpoint_dir


def manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  """Starts an asynchronous save; `mngr.wait_until_finished()` before exit."""
  mngr.save(step, args=ocp.args.StandardSave(state))


def restore_latest(workdir: str, template_state):
  """The newest saved state, shaped like `template_state`."""
  mngr = manager(workdir)
  step = mngr.latest_step()
  if step is None:
    raise UserError(f"no checkpoint in {checkpoint_dir(workdir)}: train the run "
                    "first (python -m mnist_jax train ...).")
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template_state)
  state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
  mngr.close()
  return state
