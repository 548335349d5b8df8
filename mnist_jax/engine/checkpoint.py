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
have none, so their checkpoints keep a layout without those fields and old
runs still restore and resume. A checkpoint of an EMA run without the EMA's
own batch statistics (`ema_batch_stats`) restores with a copy of the live
statistics in their place, so an old run evaluates exactly as it did when
it was trained and measured, and a resumed one averages on from them.

A run that selects its checkpoint by validation accuracy also keeps a copy
of the best epoch's state in a second manager (`best_manager`), with the
epoch and validation accuracy that made it the best.

Every checkpoint also holds the config that trained it (a `config` item: the
config as config.json stores it, and its SHA-256), so a resume or an
evaluation under another config (a config.json deleted or edited) is refused
in one line that lists the differences, before anything is written or a
state is read with the wrong shapes. A checkpoint without the item (saved
by older code) still restores: its config is unknown, and config.json is
taken for it.

A checkpoint that cannot be read (a truncated data file, a deleted
`_METADATA` or item: orbax raises ValueError, KeyError or a bare Exception,
measured) is reported in one line and the next older one is tried; only when
none can be read is it a UserError. A full disk during a save is a UserError
too (checked before each save, and caught if it strikes during one); orbax's
own log records of it (tracebacks from its background save threads) are
dropped, so it shows as that one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from mnist_jax.core import run_dir, run_format
from mnist_jax.core.errors import UserError
from mnist_jax.core.run_dir import best_checkpoint_dir, checkpoint_dir, write_error

# Train-state fields that are saved only when they hold something.
OPTIONAL_FIELDS = ("batch_stats", "ema_params", "ema_batch_stats")
# Optional fields that a checkpoint of this config may lack, having been saved
# before they existed: what stands in for them (see the module docstring).
_ADDED_LATER = {"ema_batch_stats": lambda state: jax.tree.map(jnp.copy, state.batch_stats)}

# The items of each kind of checkpoint folder, with their orbax handlers
# (registered, so that a step's saved fields can be read: `_saved_fields`).
_LAST_ITEMS = ("state", "progress", "config")
_BEST_ITEMS = ("state", "selection", "config")
_HANDLERS = {"state": ocp.StandardCheckpointHandler,
             "progress": ocp.StandardCheckpointHandler,
             "selection": ocp.JsonCheckpointHandler,
             "config": ocp.JsonCheckpointHandler}


def _manager(directory: str, items, **options) -> ocp.CheckpointManager:
  run_dir.check_folder(directory)
  _quiet_failed_save_noise()
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(**options),
      item_handlers={item: _HANDLERS[item]() for item in items})


def manager(workdir: str, max_to_keep: int = 3) -> ocp.CheckpointManager:
  return _manager(checkpoint_dir(workdir), _LAST_ITEMS, max_to_keep=max_to_keep,
                  create=True)


def best_manager(workdir: str) -> ocp.CheckpointManager:
  """The best epoch's state (by validation accuracy), one checkpoint at most."""
  return _manager(best_checkpoint_dir(workdir), _BEST_ITEMS, max_to_keep=1, create=True)


def state_item(state) -> Dict[str, Any]:
  """The train state's saved fields: params, opt_state, step, and the optional
  ones (OPTIONAL_FIELDS) only when non-empty."""
  item = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
  for name in OPTIONAL_FIELDS:
    value = getattr(state, name, None)
    if value:
      item[name] = value
  return item


def _saved_fields(mngr: ocp.CheckpointManager, step: int):
  """The train-state fields that the checkpoint of `step` holds."""
  return set(mngr.item_metadata(step)["state"].keys())


def _state_restore(mngr: ocp.CheckpointManager, step: int, template_state):
  """Restore args for the `state` item of `step`, shaped like `template_state`
  less the fields that were added later and that this checkpoint lacks."""
  item = state_item(template_state)
  later = set(item) & set(_ADDED_LATER)
  missing = later - _saved_fields(mngr, step) if later else set()
  return ocp.args.StandardRestore(_abstract({k: v for k, v in item.items()
                                             if k not in missing}))


def _from_item(template_state, item: Dict[str, Any]):
  state = template_state.replace(**item)
  stand_ins = {name: make(state) for name, make in _ADDED_LATER.items()
               if name in state_item(template_state) and name not in item}
  return state.replace(**stand_ins)


def config_record(config: Dict) -> Dict[str, Any]:
  """The `config` item of a checkpoint: `config` (as run_dir.config_as_dict
  gives it) and its SHA-256, which a reader compares first."""
  text = json.dumps(config, sort_keys=True)
  return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "config": config}


def save(mngr: ocp.CheckpointManager, step: int, state, progress,
         config: Dict) -> None:
  """Starts an asynchronous save of the state trained by `config` (a
  config_record); `finish(mngr)` before exit."""
  _check_free_space(mngr, (state_item(state), progress))
  with _write_errors(mngr):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_item(state)),
        progress=ocp.args.StandardSave(progress),
        config=ocp.args.JsonSave(config)))


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the manager's asynchronous saves: a failed one raises here."""
  with _write_errors(mngr):
    mngr.wait_until_finished()


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the manager's asynchronous saves, then closes it."""
  wait(mngr)
  mngr.close()


# Measured on tmpfs (du): the MLP's checkpoint 1.12-1.16 MB for 1.22 MB of params
# and Adam moments; a 12,730-parameter MLP's 300 KB for 153 KB (metadata files).
# A save needs room for the new checkpoint before orbax deletes the oldest.
_DISK_FACTOR, _DISK_MARGIN = 1.2, 1 << 20


def _check_free_space(mngr: ocp.CheckpointManager, tree) -> None:
  """A UserError before a save that the disk cannot hold: orbax would fail in a
  background thread, logging tracebacks before the error reaches the caller."""
  need = _DISK_FACTOR * sum(x.nbytes for x in jax.tree.leaves(tree)) + _DISK_MARGIN
  free = shutil.disk_usage(str(mngr.directory)).free
  if free < need:
    raise UserError(f"only {free / 1e6:.1f} MB free on the device holding "
                    f"{mngr.directory}, and a checkpoint needs about {need / 1e6:.1f} "
                    "MB: free some space and run the same command again (a run "
                    "resumes from its last checkpoint).")


def _disk_full(error: Optional[BaseException]) -> bool:
  """Is `error`, or an error that led to it, a full disk? Orbax reports one as
  ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']") (measured on a
  full tmpfs), or as the OSError itself."""
  while error is not None:
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC
        or f"os_error_code='{errno.ENOSPC}'" in str(error)):
      return True
    error = error.__cause__ or error.__context__
  return False


class _DiskFullRecords(logging.Filter):
  """Drops the log records of a full disk, each with its traceback, that
  orbax's background save threads write through absl (six on a full tmpfs,
  measured): the next `save` or `wait` reports it as one UserError line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and _disk_full(record.exc_info[1]))


_DISK_FULL_RECORDS = _DiskFullRecords()


def _closed_loop_callbacks(previous_hook):
  """sys.unraisablehook, less the RuntimeError('Event loop is closed') of a
  tensorstore write that ended after orbax's save coroutine had stopped for a
  failed write (0-5 per full-disk failure on a real full tmpfs, measured):
  that failure is reported on its own."""
  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous_hook(unraisable)
  hook.closed_loop_callbacks = True
  return hook


def _quiet_failed_save_noise() -> None:
  """Once per process: a failed save shows only as its one UserError line."""
  logging.getLogger("absl").addFilter(_DISK_FULL_RECORDS)  # a no-op when added
  if not getattr(sys.unraisablehook, "closed_loop_callbacks", False):
    sys.unraisablehook = _closed_loop_callbacks(sys.unraisablehook)


@contextlib.contextmanager
def _write_errors(mngr: ocp.CheckpointManager) -> Iterator[None]:
  """A failed write during a save as one UserError line; orbax raises it from
  the next save or wait after the failing one."""
  try:
    yield
  except (OSError, ValueError) as e:
    if not (isinstance(e, OSError) or _disk_full(e)):
      raise
    _join_save_threads()
    error = e if isinstance(e, OSError) else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    raise write_error(error, str(mngr.directory)) from None


def _join_save_threads(timeout_s: float = 30.0) -> None:
  """Lets the threads that orbax's failed save left running end before the
  process does: one still running at exit could no longer use an executor
  and logged a traceback ('cannot schedule new futures after shutdown', in 1
  of 4 runs of tests/cli_on_npz.py with a full disk, measured). Orbax's
  threads re-raise their error from `join`: the full disk being reported."""
  for thread in threading.enumerate():
    if (thread is not threading.current_thread()
        and type(thread).__module__.startswith("orbax.")):
      with contextlib.suppress(Exception):
        thread.join(timeout_s)


def save_best(mngr: ocp.CheckpointManager, step: int, state,
              selection: Dict[str, Any], config: Dict) -> None:
  """Keeps `state` as the best so far; `selection` says why (epoch,
  val_accuracy); `config` is the config_record of the run."""
  _check_free_space(mngr, state_item(state))
  with _write_errors(mngr):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_item(state)),
        selection=ocp.args.JsonSave(selection),
        config=ocp.args.JsonSave(config)))


def best_selection(mngr: ocp.CheckpointManager) -> Optional[Dict[str, Any]]:
  """The saved best checkpoint's {epoch, val_accuracy}, or None if there is none."""
  found = _newest_readable(
      mngr, lambda step: ocp.args.Composite(selection=ocp.args.JsonRestore()))
  return None if found is None else found[1]["selection"]


def _abstract(tree):
  """Shapes, dtypes and shardings of `tree`: where restored arrays will live."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _notice(text: str) -> None:
  print(f"warning: {text}", file=sys.stderr)


def _reason(error: Exception) -> str:
  """The first line of an orbax error, shortened (they quote whole specs)."""
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= 120 else text[:117] + "..."


def _saved_record(mngr: ocp.CheckpointManager, step: int) -> Optional[Dict]:
  """Checkpoint `step`'s config_record; None if it has no readable one (saved
  by older code, or damaged: reading its state then says so)."""
  try:
    record = mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
  except Exception:  # noqa: BLE001 -- absent (KeyError) or damaged alike
    return None
  if not (isinstance(record, dict) and isinstance(record.get("config"), dict)):
    return None
  return record


def saved_config(mngr: ocp.CheckpointManager, step: int) -> Optional[Dict]:
  """The config that trained checkpoint `step`; None if it is unknown."""
  record = _saved_record(mngr, step)
  return None if record is None else record["config"]


def _differences(mngr: ocp.CheckpointManager, step: int, config: Dict) -> List[str]:
  """How `config` differs from the one that trained checkpoint `step`
  ([] if it does not, or if that one is unknown)."""
  record = _saved_record(mngr, step)
  if record is None or record.get("sha256") == config_record(config)["sha256"]:
    return []
  return run_dir.config_differences(run_format.upgraded(record["config"]), config)


def check_resumable(workdir: str, config: Dict) -> None:
  """A UserError, before anything is written, if a checkpoint of `workdir`
  (last or best) was trained by another config than `config` (as
  run_dir.config_as_dict gives it): resuming would go on with another config."""
  for where, items in ((checkpoint_dir(workdir), _LAST_ITEMS),
                       (best_checkpoint_dir(workdir), _BEST_ITEMS)):
    mngr = _reader(where, items)
    if mngr is None:
      continue
    steps = sorted(mngr.all_steps(), reverse=True)
    diffs = next((d for d in (_differences(mngr, s, config) for s in steps) if d), [])
    mngr.close()
    if diffs:
      raise UserError(
          f"the checkpoints in {where} were trained with another config "
          f"({'; '.join(diffs)}); nothing was written: train this config in "
          "a new --workdir, or pass --force to delete those intact checkpoints and "
          "train it there from the start.")


def _refuse_other_config(mngr: ocp.CheckpointManager, step: int,
                         config: Optional[Dict]) -> None:
  diffs = [] if config is None else _differences(mngr, step, config)
  if diffs:
    workdir = os.path.dirname(str(mngr.directory))
    raise UserError(
        f"{os.path.join(workdir, run_dir.CONFIG_FILE)} is not the config that trained "
        f"the checkpoint of step {step} in {mngr.directory} ({'; '.join(diffs)}): put "
        "back the run's own config.json (the checkpoints are intact).")


def _newest_readable(mngr: ocp.CheckpointManager, args_at: Callable[[int], Any],
                     drop: bool = False,
                     config: Optional[Dict] = None) -> Optional[Tuple[int, Any]]:
  """(step, restored items) of the newest checkpoint that can be read with
  `args_at(step)`; None if the manager has none. A checkpoint trained by
  another config than `config` is a UserError (never called damaged). Each
  unreadable one is reported in one line and, with `drop`, deleted once an
  older one was read: training resumes from the older one and recomputes its
  steps bit for bit, and orbax saves no step at or below its newest. None
  readable: a UserError."""
  steps = sorted(mngr.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    _refuse_other_config(mngr, step, config)
    try:
      restored = mngr.restore(step, args=args_at(step))
    except Exception as e:  # noqa: BLE001 -- any damage; see the module docstring
      older = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older one"
      _notice(f"the checkpoint of step {step} in {mngr.directory} cannot be read "
              f"({_reason(e)}); {older}.")
      continue
    for bad in steps[:i] if drop else ():
      mngr.delete(bad)
    return step, restored
  if steps:
    raise UserError(f"no checkpoint in {mngr.directory} can be read (steps "
                    f"{', '.join(map(str, steps))}: damaged, or saved without their "
                    "config by a run whose config.json was since changed): put back "
                    "the run's own config.json if it was changed; else `train ... "
                    "--force` deletes these checkpoints and trains the run again from "
                    "the start.")
  return None


def restore(mngr: ocp.CheckpointManager, template_state,
            template_progress) -> Optional[Tuple[Any, Any]]:
  """(state, progress) of the newest readable checkpoint, or None if there is
  none; unreadable newer ones are deleted (see _newest_readable). The
  checkpoints' configs were checked first (check_resumable)."""
  found = _newest_readable(mngr, lambda step: ocp.args.Composite(
      state=_state_restore(mngr, step, template_state),
      progress=ocp.args.StandardRestore(_abstract(_saved_sums_names(
          mngr, step, template_progress)))), drop=True)
  if found is None:
    return None
  restored = found[1]
  progress = dict(restored["progress"], sums={
      run_format.RENAMED_SUMS.get(k, k): v for k, v in restored["progress"]["sums"].items()})
  return _from_item(template_state, restored["state"]), progress


def _saved_sums_names(mngr: ocp.CheckpointManager, step: int, progress):
  """`progress` with its sums named as checkpoint `step` saved them."""
  try:
    saved = set(mngr.item_metadata(step)["progress"]["sums"].keys())
  except Exception:  # noqa: BLE001 -- unreadable: restoring it says so
    return progress
  old = {new: old for old, new in run_format.RENAMED_SUMS.items() if old in saved}
  return dict(progress, sums={old.get(k, k): v for k, v in progress["sums"].items()})


def _reader(directory: str, items) -> Optional[ocp.CheckpointManager]:
  """A manager of `directory` for reading; None, creating nothing, if it is absent.
  (Not orbax's read_only option: it logs two warnings each time.)"""
  if not os.path.lexists(directory):
    return None
  return _manager(directory, items, create=False)


def restore_latest(workdir: str, template_state, which: str = "last",
                   config: Optional[Dict] = None) -> Tuple[Any, int]:
  """(state, step) of the newest readable saved train state ('last'), or the
  best epoch's ('best'), placed like `template_state`; a checkpoint trained
  by another config than `config` (run_dir.config_as_dict's form) is a
  UserError. Reads only: creates and deletes nothing."""
  if which not in ("last", "best"):
    raise UserError(f"unknown checkpoint {which!r}: use 'last' or 'best'.")
  where, items = ((checkpoint_dir(workdir), _LAST_ITEMS) if which == "last"
                   else (best_checkpoint_dir(workdir), _BEST_ITEMS))
  mngr = _reader(where, items)
  try:
    found = None if mngr is None else _newest_readable(
        mngr, lambda step: ocp.args.Composite(
            state=_state_restore(mngr, step, template_state)), config=config)
  finally:
    if mngr is not None:
      mngr.close()
  if found is None:
    hint = ("train the run first (python -m mnist_jax train ...)" if which == "last"
            else "this run reports its best validation epoch (config.select = "
            "'best_val'), whose checkpoint is missing: if the run was trained, it "
            "was deleted; `train ... --force` deletes the run's other checkpoints and "
            "trains it again")
    raise UserError(f"no checkpoint in {where}: {hint}.")
  return _from_item(template_state, found[1]["state"]), found[0]
