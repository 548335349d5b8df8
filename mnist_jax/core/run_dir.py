"""The run directory: the one place results live.

  <workdir>/config.json     the run's full config
  <workdir>/train.lock      held (fcntl.flock) by the process training the run;
                            holds its PID while held, nothing otherwise
  <workdir>/metrics.jsonl   one JSON object per epoch (keys in METRIC_KEYS)
  <workdir>/checkpoints/    orbax checkpoints of the train state
  <workdir>/best_checkpoint/  the best epoch's state by validation accuracy
                            (only with config.select = 'best_val')
  <workdir>/extras.json     optional per-run facts for tables (parameters,
                            multiply-adds, training time, robustness curves)
  <study>/<point>/rejected.json  a study point whose config is impossible
  <workdir>/failed.json     a study run that stopped on a UserError, with its
                            one-line reason (removed when the run is retried)
  <workdir>/events.out.tfevents.*  TensorBoard events (engine/metric_writer.py)
  <workdir>/profile/        a jax.profiler trace (config.profile_steps > 0)
  <workdir>/figures/        figures drawn from the above (python -m mnist_jax plot)

Writers and readers (tables, plots) both go through this module, so metric
names cannot drift apart.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Dict, List, Optional, Tuple

import ml_collections

from mnist_jax.core import config as config_lib
from mnist_jax.core.errors import UserError
from mnist_jax.core.workdir import write_error

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "best_checkpoint"
EXTRAS_FILE = "extras.json"
REJECTED_FILE = "rejected.json"
FAILED_FILE = "failed.json"
FIGURES_DIR = "figures"

# Every epoch line of metrics.jsonl has these keys...
METRIC_KEYS = (
    "epoch", "step", "learning_rate",
    "train_loss", "train_accuracy",
    "test_loss", "test_accuracy", "test_count",
    "epoch_time_s", "train_time_s", "train_images_per_s",
)
# ...and these when the run has a validation split (config.data.validation_size).
OPTIONAL_METRIC_KEYS = ("val_loss", "val_accuracy", "val_count")
# Keys that differ between two runs of one config (wall-clock measurements).
TIMING_KEYS = ("epoch_time_s", "train_time_s", "train_images_per_s")
SELECTIONS = ("last", "best_val")


def _write_atomic(path: str, text: str) -> None:
  """Write, fsync, then rename, so neither a kill nor a crash leaves half a file."""
  tmp = path + ".tmp"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    raise write_error(e, path) from None


def config_as_dict(config: ml_collections.ConfigDict) -> Dict:
  """The config as config.json stores it (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  _write_atomic(os.path.join(workdir, CONFIG_FILE),
                config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _flatten(tree: Dict, prefix: str = "") -> Dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def flat_config(config: ml_collections.ConfigDict) -> Dict:
  """The config as config.json stores it, one 'a.b' key per leaf."""
  return _flatten(config_as_dict(config))


def _base_defaults() -> Dict:
  defaults = _flatten(config_as_dict(config_lib.base_config()))
  defaults.update({f"model.{key}": value
                   for key, value in config_lib.ADDED_MODEL_DEFAULTS.items()})
  return defaults


def config_differences(saved: Dict, new: Dict) -> List[str]:
  """'key: saved -> new' for every leaf that differs, missing ones included.

  A key the saved config lacks but whose new value is base_config's default
  (or, for the model, config.ADDED_MODEL_DEFAULTS') is no difference: it was
  added after the run was saved, and its default keeps the old behaviour.
  """
  a, b = _flatten(saved), _flatten(new)
  defaults = _base_defaults()
  a.update({k: v for k, v in b.items()
            if k not in a and k in defaults and defaults[k] == v})
  return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
          for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def claim(workdir: str, config: ml_collections.ConfigDict, force: bool) -> None:
  """Makes `workdir` this config's run: new, the same config (resume), or forced.

  A workdir trained with another config is refused, naming the differing keys.
  `force` starts the run over: its config, metrics and checkpoints are deleted
  first (also the way out of damaged metrics or checkpoints). A config.json
  with no checkpoint and no epoch line beside it (a first start that failed,
  e.g. on a bad split) is no run yet: it is replaced.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if force:
    clear(workdir)
  elif os.path.isfile(path) and has_results(workdir):
    diffs = _differences_from_saved(path, config)
    if diffs:
      raise UserError(
          f"{workdir!r} holds a run with another config ({'; '.join(diffs)}): "
          "use a new --workdir, or pass --force to overwrite that run.")
  write_config(workdir, config)


def _differences_from_saved(path: str, config: ml_collections.ConfigDict) -> List[str]:
  """config_differences between the saved config.json and `config`."""
  try:
    with open(path) as f:
      saved = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}): put back the run's config, or "
                    "pass --force to train the run again from the start.") from None
  return config_differences(saved, config_as_dict(config))


def has_results(workdir: str) -> bool:
  """True if `workdir` holds an epoch line or a complete checkpoint."""
  metrics = os.path.join(workdir, METRICS_FILE)
  if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
    return True
  # Orbax names a complete checkpoint by its step; a save still in progress
  # (or killed) is '<step>.orbax-checkpoint-tmp...'.
  return any(os.path.isdir(d) and any(name.isdigit() for name in os.listdir(d))
             for d in (checkpoint_dir(workdir), best_checkpoint_dir(workdir)))


def clear(workdir: str) -> None:
  """Deletes a run's results (config, metrics, checkpoints), nothing else."""
  for name in (CONFIG_FILE, METRICS_FILE):
    if os.path.isfile(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))
  shutil.rmtree(checkpoint_dir(workdir), ignore_errors=True)
  shutil.rmtree(best_checkpoint_dir(workdir), ignore_errors=True)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config as trained, with defaults for the fields older code did
  not write (config.from_saved): the one way a run's config is read back."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: {workdir!r} is not a training run "
                    "directory; train one with `python -m mnist_jax train`.")
  with open(path) as f:
    saved = json.load(f)
  try:
    return config_lib.from_saved(saved)
  except TypeError as e:  # a field whose type has changed since the run was saved
    raise UserError(f"{path} does not fit today's config fields ({e}): train the run "
                    "again (--force), or read it with the code that wrote it.") from None


def append_metrics(workdir: str, metrics: Dict) -> None:
  """Appends one epoch line, whole: one write, flushed and fsynced.

  A kill cannot cut a write of a few hundred bytes to a local file, and the
  fsync keeps the line through a crash; a line cut all the same (a full disk)
  is the file's last, which readers drop (read_metrics).
  """
  missing = set(METRIC_KEYS) - set(metrics)
  if missing:
    raise ValueError(f"epoch metrics lack {sorted(missing)}")
  unknown = set(metrics) - set(METRIC_KEYS) - set(OPTIONAL_METRIC_KEYS)
  if unknown:
    raise ValueError(f"epoch metrics have unknown keys {sorted(unknown)}: add "
                     "them to run_dir.METRIC_KEYS or OPTIONAL_METRIC_KEYS")
  path = os.path.join(workdir, METRICS_FILE)
  try:
    with open(path, "a") as f:
      f.write(_line(metrics))
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise write_error(e, path) from None


def _line(metrics: Dict) -> str:
  return json.dumps(metrics, sort_keys=True) + "\n"


def keep_epochs(workdir: str, completed: int) -> None:
  """Makes metrics.jsonl hold exactly epochs 1..`completed`, those the
  checkpoint being resumed has trained; called before a run resumes.

  Lines past `completed` are dropped: a run killed after writing epoch E's
  line but before its checkpoint became durable redoes epoch E. A line cut
  off at the end is dropped, and an epoch written twice with the same values
  (two processes on one workdir, before the lock) is kept once. Missing
  epochs, or one epoch with two different lines, are a UserError: the run is
  never extended over a gap.
  """
  path = os.path.join(workdir, METRICS_FILE)
  lines, damaged = _read_lines(path)
  kept = _one_per_epoch(path, [m for m in lines if m["epoch"] <= completed])
  missing = sorted(set(range(1, completed + 1)) - {m["epoch"] for m in kept})
  if missing:
    raise UserError(
        f"{path} lacks the lines of epoch(s) {', '.join(map(str, missing))}, which "
        f"the checkpoint (after epoch {completed}) has trained: put the file back "
        "from a copy, or pass --force to train the run again from the start.")
  if damaged or kept != lines:
    _write_atomic(path, "".join(_line(m) for m in kept))


def _one_per_epoch(path: str, lines: List[Dict]) -> List[Dict]:
  """`lines` sorted by epoch, each epoch once; two different lines for one
  epoch (timings aside) are a UserError."""
  by_epoch: Dict[int, Dict] = {}
  for m in lines:
    first = by_epoch.setdefault(m["epoch"], m)
    if _without_timings(first) != _without_timings(m):
      raise UserError(
          f"{path} holds two different lines for epoch {m['epoch']} (two runs wrote "
          "it at once): pass --force to train the run again from the start.")
  return [by_epoch[e] for e in sorted(by_epoch)]


def _without_timings(metrics: Dict) -> Dict:
  return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def read_metrics(workdir: str) -> List[Dict]:
  """All epoch lines of a run, in order; [] if it has none yet.

  A last line cut off mid-write is left out, with a one-line notice on
  stderr; a damaged line before the last is a UserError.
  """
  return _read_lines(os.path.join(workdir, METRICS_FILE))[0]


def _read_lines(path: str) -> Tuple[List[Dict], bool]:
  """(the epoch lines of metrics file `path`, whether a cut last line was dropped)."""
  if not os.path.isfile(path):
    return [], False
  with open(path, "rb") as f:
    raw = [line for line in f.read().split(b"\n") if line.strip()]
  lines = [_parse(line) for line in raw]
  damaged = [i for i, m in enumerate(lines) if m is None]
  if damaged and damaged != [len(lines) - 1]:
    raise UserError(f"{path} line {damaged[0] + 1} is not an epoch line (the file was "
                    "damaged or edited): put the file back from a copy, or pass "
                    "--force to train the run again from the start.")
  if damaged:
    print(f"warning: {path}: left out its last line, cut off mid-write "
          f"({raw[-1][:40].decode(errors='replace')!r}...); a resumed run writes that "
          "epoch again.",
          file=sys.stderr)
    return lines[:-1], True
  return lines, False


def _parse(line: bytes) -> Optional[Dict]:
  """The epoch line's dict, or None if it is not one (e.g. cut off)."""
  try:
    metrics = json.loads(line)
  except ValueError:
    return None
  if not isinstance(metrics, dict) or type(metrics.get("epoch")) is not int:
    return None
  return metrics


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def best_checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, BEST_CHECKPOINT_DIR))


def selected_index(lines: List[Dict], select: str = "last") -> int:
  """Index of the epoch line a run reports: the last one, or ('best_val') the
  first with the highest validation accuracy. Test metrics are never read."""
  if select == "last":
    return len(lines) - 1
  if select != "best_val":
    raise UserError(f"config.select = {select!r}: use one of {', '.join(SELECTIONS)}.")
  if any("val_accuracy" not in m for m in lines):
    raise UserError("select = 'best_val' needs val_accuracy in every epoch line: "
                    "set config.data.validation_size > 0.")
  accuracies = [m["val_accuracy"] for m in lines]
  return accuracies.index(max(accuracies))


def selected_metrics(workdir: str, select: str = "last") -> Dict:
  """The epoch line a run reports as final (see selected_index)."""
  lines = read_metrics(workdir)
  if not lines:
    raise UserError(f"{workdir!r} has no epoch metrics yet: train the run first.")
  return lines[selected_index(lines, select)]


def is_finished(workdir: str, num_epochs: int) -> bool:
  """True when metrics.jsonl holds every epoch 1..num_epochs."""
  epochs = [m["epoch"] for m in read_metrics(workdir)]
  return epochs[:num_epochs] == list(range(1, num_epochs + 1))


def _write_json(path: str, value: Dict) -> None:
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
  except OSError as e:
    raise write_error(e, os.path.dirname(path)) from None
  _write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _read_json(path: str) -> Dict:
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}): delete it, and the command "
                    "that wrote it writes it again.") from None


def update_extras(workdir: str, **values) -> Dict:
  """Merges `values` into the run's extras.json; returns the merged dict."""
  extras = dict(read_extras(workdir), **values)
  _write_json(os.path.join(workdir, EXTRAS_FILE), extras)
  return extras


def read_extras(workdir: str) -> Dict:
  """The run's extras.json; {} if it has none."""
  return _read_json(os.path.join(workdir, EXTRAS_FILE))


def write_rejection(point_dir: str, reason: str) -> None:
  """Marks a study point whose config was rejected as impossible."""
  _write_json(os.path.join(point_dir, REJECTED_FILE), {"reason": reason})


def read_rejection(point_dir: str) -> Optional[str]:
  """The reason a study point was rejected, or None if it was not."""
  return _read_json(os.path.join(point_dir, REJECTED_FILE)).get("reason")


def write_failure(workdir: str, reason: str) -> None:
  """Marks a study run that stopped on a UserError (the study goes on)."""
  _write_json(os.path.join(workdir, FAILED_FILE), {"reason": reason})


def read_failure(workdir: str) -> Optional[str]:
  """Why the run failed the last time it was tried, or None."""
  return _read_json(os.path.join(workdir, FAILED_FILE)).get("reason")


def clear_failure(workdir: str) -> None:
  """Forgets an earlier failure: the run is being tried again."""
  path = os.path.join(workdir, FAILED_FILE)
  if os.path.isfile(path):
    os.remove(path)


def figures_dir(workdir: str) -> str:
  return os.path.join(workdir, FIGURES_DIR)
