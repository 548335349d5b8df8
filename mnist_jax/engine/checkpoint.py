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

The `state` item holds only the train state's non-empty fields: batch norm
statistics and the EMA of the weights are absent for models and configs that
have none, so their checkpoints keep the layout they had before those fields
existed and old runs still restore and resume.

A run that selects its checkpoint by validation accuracy also keeps a copy
of the best epoch's state in a second manager (`best_manager`), with the
epoch and validation accuracy that made it the best.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from mnist_jax.core.errors import UserError
from mnist_jax.core.run_dir import best_checkpoint_dir, checkpoint_dir

# Train-state fields that are saved only when they hold something.
OPTIONAL_FIELDS = ("batch_stats", "ema_params")


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def best_manager(workdir: str) -> ocp.CheckpointManager:
  """The best epoch's state (by validation accuracy), one checkpoint at most."""
  return ocp.CheckpointManager(
      best_checkpoint_dir(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


def state_item(state) -> Dict[str, Any]:
  """The train state's saved fields: params, opt_state, step, and the optional
  ones (OPTIONAL_FIELDS) only when non-empty."""
  item = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
  for name in OPTIONAL_FIELDS:
    value = getattr(state, name, None)
    if value:
      item[name] = value
  return item


def _from_item(template_state, item: Dict[str, Any]):
  return template_state.replace(**item)


def save(mngr: ocp.CheckpointManager, step: int, state, progress) -> None:
  """Starts an asynchronous save; `mngr.wait_until_finished()` before exit."""
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state_item(state)),
      progress=ocp.args.StandardSave(progress)))


def save_best(mngr: ocp.CheckpointManager, step: int, state,
              selection: Dict[str, Any]) -> None:
  """Keeps `state` as the best so far; `selection` says why (epoch, val_accuracy)."""
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state_item(state)),
      selection=ocp.args.JsonSave(selection)))


def best_selection(mngr: ocp.CheckpointManager) -> Optional[Dict[str, Any]]:
  """The saved best checkpoint's {epoch, val_accuracy}, or None if there is none."""
  step = mngr.latest_step()
  if step is None:
    return None
  return mngr.restore(step, args=ocp.args.Composite(
      selection=ocp.args.JsonRestore()))["selection"]


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
      state=ocp.args.StandardRestore(_abstract(state_item(template_state))),
      progress=ocp.args.StandardRestore(_abstract(template_progress))))
  return _from_item(template_state, restored["state"]), restored["progress"]


def restore_latest(workdir: str, template_state, which: str = "last"):
  """The newest saved train state ('last'), or the best epoch's ('best'),
  placed like `template_state`."""
  if which not in ("last", "best"):
    raise UserError(f"unknown checkpoint {which!r}: use 'last' or 'best'.")
  mngr = manager(workdir) if which == "last" else best_manager(workdir)
  step = mngr.latest_step()
  if step is None:
    where = checkpoint_dir(workdir) if which == "last" else best_checkpoint_dir(workdir)
    hint = ("train the run first (python -m mnist_jax train ...)" if which == "last"
            else "only runs with config.select = 'best_val' keep a best checkpoint")
    raise UserError(f"no checkpoint in {where}: {hint}.")
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(state_item(template_state)))))
  mngr.close()
  return _from_item(template_state, restored["state"])
