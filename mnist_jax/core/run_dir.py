"""The run directory: the one place results live.

  <workdir>/config.json     the run's full config
  <workdir>/train.lock      held (fcntl.flock) by the process training the run;
                            holds its PID while held, nothing otherwise
  <workdir>/metrics.jsonl   one JSON object per epoch: METRIC_KEYS, and every
                            other measurement of the train step and evaluator
  <workdir>/checkpoints/    orbax checkpoints of the train state
  <workdir>/best_checkpoint/  the best epoch's state by validation accuracy
                            (only with config.select = 'best_val')
  <workdir>/extras.json     optional per-run facts for tables (parameters,
                            multiply-adds, training time, robustness curves)
  <study>/<point>/rejected.json  a study point whose config is impossible
  <workdir>/failed.json     a study run that stopped on a UserError, with its
                            one-line reason (removed when the run is retried)
  <workdir>/events.out.tfevents.*  TensorBoard events (engine/metric_writer.py)
  <workdir>/diverged.json   a run stopped by a NaN or inf loss, with its reason
  <workdir>/profile/        a jax.profiler trace (config.profile_steps > 0)
  <workdir>/figures/        figures drawn from the above (python -m mnist_jax plot)

Writers and readers (tables, plots) both go through this module, so metric
names cannot drift apart. A run directory may come from someone else, so it
is never trusted: its files are opened without following symbolic links (a
planted link is a UserError, never a write elsewhere), every file is checked
where it is read (wrong JSON, types or keys are a UserError naming the file),
and every write goes to a new temporary file beside its target that replaces
the target only once complete (a full disk or a read-only folder leaves no
partial file).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import stat
import sys
import tempfile
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

import ml_collections

from mnist_jax.core import config as config_lib, run_format
from mnist_jax.core.errors import UserError
from mnist_jax.core.workdir import LOCK_FILE, write_error

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "best_checkpoint"
EXTRAS_FILE = "extras.json"
REJECTED_FILE = "rejected.json"
FAILED_FILE = "failed.json"
DIVERGED_FILE = "diverged.json"
FIGURES_DIR = "figures"
PROFILE_DIR = "profile"
EVENTS_PATTERN = "events.out.tfevents.*"
# The figures `plot` draws (inference/figures.FIGSIZES has their sizes), in
# the formats it writes: what `--force` removes from figures/.
FIGURE_NAMES = ("train_samples", "conv_kernels", "feature_maps", "confusion_matrix",
                "per_class_accuracy", "misclassified", "learning_curves", "softmax")
FIGURE_FORMATS = ("png", "pdf")
# The files and folders the package writes into a run directory besides
# figures/, events and the lock: all that `--force` deletes.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, EXTRAS_FILE, REJECTED_FILE, FAILED_FILE,
             DIVERGED_FILE)
RUN_DIRS = (CHECKPOINT_DIR, BEST_CHECKPOINT_DIR, PROFILE_DIR)

# Every epoch line of metrics.jsonl has these keys, which resuming, tables and
# plots read; it has any others the train step and the evaluator measure
# (val_loss, val_accuracy and val_count with config.data.validation_size),
# written as they come. Every value is a number.
METRIC_KEYS = (
    "epoch", "step", "learning_rate",
    "train_loss", "train_accuracy",
    "test_loss", "test_accuracy", "test_count",
    "epoch_time_s", "train_time_s", "train_images_per_s",
)
# Keys that differ between two runs of one config (wall-clock measurements).
TIMING_KEYS = ("epoch_time_s", "train_time_s", "train_images_per_s")
SELECTIONS = ("last", "best_val")
_TMP_SUFFIX = ".tmp"


def refuse_link(path: str) -> None:
  """A UserError if `path` is a symbolic link: a run's files and folders are
  never links, and one planted there would send a write outside the run."""
  if os.path.islink(path):
    raise UserError(f"{path} is a symbolic link (to {os.readlink(path)}), which a run "
                    "directory never holds: delete the link (and check the run's "
                    "other files), then run the same command again.")


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w", flag: str = "--workdir") -> Iterator[IO]:
  """A new file to write `path`'s contents into, which replaces `path` once
  written and fsynced; on any error it is removed (no partial file is left)
  and an OSError becomes one UserError line. The temporary file has a fresh
  name (O_EXCL), so no planted link can be written through, and os.replace
  replaces the name, never what a link there points to. `flag` names the
  command's flag that chose the folder, for the error."""
  refuse_link(path)
  folder = os.path.dirname(path) or "."
  try:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                               suffix=_TMP_SUFFIX)
  except OSError as e:
    raise write_error(e, path, flag) from None
  try:
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from a shared group
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError):
      raise write_error(e, path, flag) from None
    raise


def _write_atomic(path: str, text: str) -> None:
  """Write, fsync, then rename, so neither a kill nor a crash leaves half a file."""
  with atomic_file(path) as f:
    f.write(text)


def _read_bytes(path: str) -> Optional[bytes]:
  """The contents of run file `path`, opened without following a link; None
  if it does not exist."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
  except FileNotFoundError:
    return None
  except OSError as e:
    if e.errno == errno.ELOOP:
      refuse_link(path)
    raise UserError(f"cannot read {path} ({e.strerror}): make it readable, then run "
                    "the same command again.") from None
  if stat.S_ISDIR(os.fstat(fd).st_mode):  # opened, though not a file
    os.close(fd)
    raise UserError(f"{path} is a folder, not the file a run keeps there: move it "
                    "away, then run the same command again.")
  with os.fdopen(fd, "rb") as f:
    return f.read()


def _read_json(path: str, todo: str) -> Any:
  """The JSON value in run file `path` (None if absent); not JSON: a UserError
  that ends with `todo`."""
  raw = _read_bytes(path)
  if raw is None:
    return None
  try:
    return json.loads(raw)
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not valid JSON ({e}): {todo}") from None


def config_as_dict(config: ml_collections.ConfigDict) -> Dict:
  """The config as config.json stores it (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def make_folder(path: str, flag: str = "--workdir") -> str:
  """Creates folder `path` if needed; a failure is one UserError line."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise write_error(e, path, flag) from None
  return path


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  make_folder(workdir)
  saved = run_format.stamped(json.loads(config.to_json_best_effort()))
  _write_atomic(os.path.join(workdir, CONFIG_FILE),
                json.dumps(saved, indent=2, sort_keys=True) + "\n")


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


def config_differences(saved: Dict, new: Dict) -> List[str]:
  """'key: saved -> new' for every leaf that differs, missing ones included.

  `saved` is in today's format (run_format.upgraded). A key it lacks but
  whose new value is its default (base_config's, or the model's attribute
  default) is no difference: it was added after the run was saved, and its
  default keeps the old behaviour.
  """
  a, b = _flatten(saved), _flatten(new)
  defaults = _flatten(config_as_dict(config_lib.base_config()))
  defaults.update(_flatten({"model": run_format.model_defaults(new.get("model"))}))
  a.update({k: v for k, v in b.items()
            if k not in a and k in defaults and defaults[k] == v})
  return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
          for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def claim(workdir: str, config: ml_collections.ConfigDict, force: bool) -> None:
  """Makes `workdir` this config's run: new, the same config (resume), or forced.

  A workdir trained with another config is refused, naming the differing keys.
  `force` starts the run over: everything the package wrote there is deleted
  first (`clear`; also the way out of damaged metrics or checkpoints). A
  config.json with no checkpoint and no epoch line beside it (a first start
  that failed, e.g. on a bad split) is no run yet: it is replaced. The
  checkpoints' own configs are checked before this (engine/checkpoint.py).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if force:
    clear(workdir)
  elif has_results(workdir):
    saved = _read_config_dict(path, required=False)
    diffs = [] if saved is None else config_differences(run_format.upgraded(saved),
                                                        config_as_dict(config))
    if diffs:
      raise UserError(
          f"{workdir!r} holds a run with another config ({'; '.join(diffs)}): "
          "use a new --workdir, or pass --force to delete that run (its checkpoints "
          "included) and train this config there.")
  _remove(os.path.join(workdir, DIVERGED_FILE))  # tried again: it may not diverge
  write_config(workdir, config)


# The way out of a damaged run, saying what it costs.
_FORCE = ("pass --force to `train` to delete the run (its checkpoints included) and "
          "train it again from the start")
_CONFIG_TODO = f"put back the run's config.json from a copy, or {_FORCE}."


def _read_config_dict(path: str, required: bool = True) -> Optional[Dict]:
  """config.json's dict, checked to be a run's config; None if it is absent
  and not `required`."""
  saved = _read_json(path, _CONFIG_TODO)
  if saved is None and not required:
    return None
  if saved is None:
    workdir = os.path.dirname(path) or "."
    raise UserError(f"{path} not found: {workdir!r} is not a training run "
                    "directory; train one with `python -m mnist_jax train`.")
  if not isinstance(saved, dict):
    raise UserError(f"{path} holds a JSON {type(saved).__name__}, not a run's config: "
                    + _CONFIG_TODO)
  model = saved.get("model")
  if not isinstance(model, dict) or not isinstance(model.get("name"), str):
    raise UserError(f"{path} has no model block with a name, which every run's config "
                    "has: " + _CONFIG_TODO)
  return saved


def has_results(workdir: str) -> bool:
  """True if `workdir` holds an epoch line or a complete checkpoint."""
  metrics = os.path.join(workdir, METRICS_FILE)
  if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
    return True
  # Orbax names a complete checkpoint by its step; a save still in progress
  # (or killed) is '<step>.orbax-checkpoint-tmp...'.
  return any(os.path.isdir(d) and any(name.isdigit() for name in os.listdir(d))
             for d in (checkpoint_dir(workdir), best_checkpoint_dir(workdir)))


def _remove(path: str) -> None:
  """Deletes file, link or folder `path` (a link itself, never its target)."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)
  except OSError as e:
    raise UserError(f"cannot delete {path} ({e.strerror}): make the run directory "
                    "writable, then run the same command again.") from None


def written_by_package(workdir: str) -> List[str]:
  """Paths of everything in `workdir` the package wrote there (see the module
  docstring), the lock aside: what `clear` deletes."""
  named = [os.path.join(workdir, n) for n in RUN_FILES + RUN_DIRS]
  figures = [os.path.join(workdir, FIGURES_DIR, f"{n}.{fmt}")
             for n in FIGURE_NAMES for fmt in FIGURE_FORMATS]
  patterns = [EVENTS_PATTERN, f".*{_TMP_SUFFIX}",
              os.path.join(FIGURES_DIR, f".*{_TMP_SUFFIX}")]
  # A pattern's leading '.' matches hidden names (the temporary files).
  found = [p for pattern in patterns
           for p in glob.glob(os.path.join(glob.escape(workdir), pattern))]
  return [p for p in named + figures if os.path.lexists(p)] + sorted(found)


def clear(workdir: str) -> None:
  """Deletes everything the package wrote in `workdir` (written_by_package):
  a forced run starts from nothing of the old one (no stale extras.json or
  TensorBoard events of another model). Files the package never writes are
  the user's: they are kept, and named in a notice."""
  for path in written_by_package(workdir):
    _remove(path)
  figures = figures_dir(workdir)
  if os.path.isdir(figures) and not os.listdir(figures):
    _remove(figures)
  kept = sorted(set(os.listdir(workdir)) - {LOCK_FILE}) if os.path.isdir(workdir) else []
  if kept:
    print(f"warning: --force kept what the package did not write in {workdir}: "
          f"{', '.join(kept)}.", file=sys.stderr)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config as trained, in today's format (run_format.from_saved):
  the one way a run's config is read back."""
  path = os.path.join(workdir, CONFIG_FILE)
  saved = _read_config_dict(path)
  try:
    config = run_format.from_saved(saved)
    config_lib.validate(config)
  except UserError as e:  # edited by hand: a value no run can have
    raise UserError(f"{path}: {e} Put back the run's config.json from a copy.") from None
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    # a field whose type has changed since the run was saved, or edited by hand
    raise UserError(f"{path} does not fit today's config fields ({e}): read the run "
                    f"with the code that wrote it, or {_FORCE}.") from None
  return config


def append_metrics(workdir: str, metrics: Dict) -> None:
  """Appends one epoch line, whole: one write, flushed and fsynced.

  A kill cannot cut a write of a few hundred bytes to a local file, and the
  fsync keeps the line through a crash; a line cut all the same (a full disk)
  is the file's last, which readers drop (read_metrics).
  """
  problem = _line_problem(metrics)
  if problem:
    raise ValueError(f"not an epoch line: {problem}")
  path = os.path.join(workdir, METRICS_FILE)
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
  except OSError as e:
    refuse_link(path)
    raise write_error(e, path) from None
  size = os.fstat(fd).st_size
  try:
    os.write(fd, _line(metrics).encode())
    os.fsync(fd)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.ftruncate(fd, size)  # no part of the line is left behind
    raise write_error(e, path) from None
  finally:
    os.close(fd)


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
        f"from a copy, or {_FORCE}.")
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
          f"it at once): {_FORCE}.")
  return [by_epoch[e] for e in sorted(by_epoch)]


def _without_timings(metrics: Dict) -> Dict:
  return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def read_metrics(workdir: str, notice: bool = True) -> List[Dict]:
  """All epoch lines of a run, in order; [] if it has none yet.

  A last line cut off mid-write is left out, with a one-line notice on
  stderr (unless not `notice`); a damaged line is a UserError.
  """
  return _read_lines(os.path.join(workdir, METRICS_FILE), notice)[0]


def _read_lines(path: str, notice: bool = True) -> Tuple[List[Dict], bool]:
  """(the epoch lines of metrics file `path`, whether a cut last line was dropped)."""
  text = _read_bytes(path)
  if text is None:
    return [], False
  raw = [line for line in text.split(b"\n") if line.strip()]
  lines = [_parse(line) for line in raw]
  for i, m in enumerate(lines):
    problem = _line_problem(m) if isinstance(m, dict) else None
    if problem or (m is None and i < len(lines) - 1):
      raise UserError(f"{path} line {i + 1} is not an epoch line "
                      f"({problem or 'not a JSON object'}; the file was damaged or "
                      f"edited): put the file back from a copy, or {_FORCE}.")
  damaged = [i for i, m in enumerate(lines) if m is None]
  if not damaged:
    return lines, False
  if notice:
    print(f"warning: {path}: left out its last line, cut off mid-write "
          f"({raw[-1][:40].decode(errors='replace')!r}...); a resumed run writes that "
          "epoch again.",
          file=sys.stderr)
  return lines[:-1], True


def _parse(line: bytes) -> Optional[Dict]:
  """The line's JSON object, or None if it is not one (e.g. cut off)."""
  try:
    metrics = json.loads(line)
  except (ValueError, UnicodeDecodeError):
    return None
  return metrics if isinstance(metrics, dict) else None


def _line_problem(metrics: Dict) -> Optional[str]:
  """What is wrong with an epoch line's keys or values; None if nothing."""
  missing = [k for k in METRIC_KEYS if k not in metrics]
  if missing:
    return f"it lacks {', '.join(missing)}"
  if type(metrics["epoch"]) is not int:
    return f"epoch = {metrics['epoch']!r} is not a whole number"
  for key, value in metrics.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      return f"{key} = {value!r} is not a number"
  return None


def check_folder(path: str) -> str:
  """`path`, a folder of the run (checkpoints, figures): a UserError if a link
  or a file stands in its place."""
  refuse_link(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{path} is a file where the run keeps a folder: move it away "
                    "(or, if it holds nothing of yours, delete it), then run the same "
                    "command again.")
  return path


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
  make_folder(os.path.dirname(path))
  _write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


_REWRITE_TODO = "delete it, and the command that wrote it writes it again."


def _read_dict(path: str) -> Dict:
  """The JSON object in `path`; {} if it is absent; else a UserError."""
  value = _read_json(path, _REWRITE_TODO)
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise UserError(f"{path} holds a JSON {type(value).__name__}, not an object: "
                    + _REWRITE_TODO)
  return value


def _read_reason(path: str) -> Optional[str]:
  """The "reason" of a rejected.json or failed.json; None if it is absent."""
  reason = _read_dict(path).get("reason")
  if not (reason is None or isinstance(reason, str)):
    raise UserError(f"{path} has a reason that is not text: " + _REWRITE_TODO)
  return reason


def update_extras(workdir: str, **values) -> Dict:
  """Merges `values` into the run's extras.json; returns the merged dict."""
  extras = dict(read_extras(workdir), **values)
  _write_json(os.path.join(workdir, EXTRAS_FILE), extras)
  return extras


def read_extras(workdir: str) -> Dict:
  """The run's extras.json; {} if it has none."""
  return _read_dict(os.path.join(workdir, EXTRAS_FILE))


def write_rejection(point_dir: str, reason: str) -> None:
  """Marks a study point whose config was rejected as impossible."""
  _write_json(os.path.join(point_dir, REJECTED_FILE), {"reason": reason})


def read_rejection(point_dir: str) -> Optional[str]:
  """The reason a study point was rejected, or None if it was not."""
  return _read_reason(os.path.join(point_dir, REJECTED_FILE))


def write_failure(workdir: str, reason: str) -> None:
  """Marks a study run that stopped on a UserError (the study goes on)."""
  _write_json(os.path.join(workdir, FAILED_FILE), {"reason": reason})


def read_failure(workdir: str) -> Optional[str]:
  """Why the run failed the last time it was tried, or None."""
  return _read_reason(os.path.join(workdir, FAILED_FILE))


def clear_failure(workdir: str) -> None:
  """Forgets an earlier failure: the run is being tried again."""
  path = os.path.join(workdir, FAILED_FILE)
  if os.path.isfile(path):
    os.remove(path)


def figures_dir(workdir: str) -> str:
  return os.path.join(workdir, FIGURES_DIR)


def write_divergence(workdir: str, reason: str) -> None:
  """Marks a run stopped by a NaN or inf: its checkpoints are not a result."""
  _write_json(os.path.join(workdir, DIVERGED_FILE), {"reason": reason})


def read_divergence(workdir: str) -> Optional[str]:
  """Why the run stopped diverging, or None if it did not."""
  return _read_reason(os.path.join(workdir, DIVERGED_FILE))
