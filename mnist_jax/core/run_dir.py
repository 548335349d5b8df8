"""The run directory: the one place results live.

  <workdir>/config.json     the run's full config
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
from typing import Dict, List, Optional

import ml_collections

from mnist_jax.core.errors import UserError

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
SELECTIONS = ("last", "best_val")


def _write_atomic(path: str, text: str) -> None:
  """Write-then-rename, so a kill never leaves a half-written file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


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


def _base_defaults() -> Dict:
  from mnist_jax.core.config import base_config  # config -> errors only: no cycle
  return _flatten(config_as_dict(base_config()))


def config_differences(saved: Dict, new: Dict) -> List[str]:
  """'key: saved -> new' for every leaf that differs, missing ones included.

  A key the saved config lacks but whose new value is base_config's default
  is no difference: it was added to base_config after the run was saved, and
  its default keeps the old behaviour.
  """
  a, b = _flatten(saved), _flatten(new)
  defaults = _base_defaults()
  a.update({k: v for k, v in b.items()
            if k not in a and k in defaults and defaults[k] == v})
  return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
          for k in sorted(set(a) | set(b)) if a.get(k, "(absent)") != b.get(k, "(absent)")]


def claim(workdir: str, config: ml_collections.ConfigDict, force: bool) -> None:
  """Makes `workdir` this config's run: new, the same config (resume), or forced.

  A workdir trained with another config is refused, naming the differing keys,
  unless `force`, which deletes its config, metrics and checkpoints first.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      diffs = config_differences(json.load(f), config_as_dict(config))
    if diffs and not force:
      raise UserError(
          f"{workdir!r} holds a run with another config ({'; '.join(diffs)}): "
          "use a new --workdir, or pass --force to overwrite that run.")
    if diffs:
      clear(workdir)
  write_config(workdir, config)


def clear(workdir: str) -> None:
  """Deletes a run's results (config, metrics, checkpoints), nothing else."""
  for name in (CONFIG_FILE, METRICS_FILE):
    if os.path.isfile(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))
  shutil.rmtree(checkpoint_dir(workdir), ignore_errors=True)
  shutil.rmtree(best_checkpoint_dir(workdir), ignore_errors=True)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: {workdir!r} is not a training run "
                    "directory; train one with `python -m mnist_jax train`.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def append_metrics(workdir: str, metrics: Dict) -> None:
  missing = set(METRIC_KEYS) - set(metrics)
  if missing:
    raise ValueError(f"epoch metrics lack {sorted(missing)}")
  unknown = set(metrics) - set(METRIC_KEYS) - set(OPTIONAL_METRIC_KEYS)
  if unknown:
    raise ValueError(f"epoch metrics have unknown keys {sorted(unknown)}: add "
                     "them to run_dir.METRIC_KEYS or OPTIONAL_METRIC_KEYS")
  with open(os.path.join(workdir, METRICS_FILE), "a") as f:
    f.write(json.dumps(metrics, sort_keys=True) + "\n")


def keep_epochs(workdir: str, completed: int) -> None:
  """Drops metric lines past epoch `completed`: a resumed run writes them again.

  A run killed after writing epoch E's line but before its checkpoint became
  durable redoes epoch E; without this, E would appear twice.
  """
  lines = [m for m in read_metrics(workdir) if m["epoch"] <= completed]
  if len(lines) != len(read_metrics(workdir)):
    _write_atomic(os.path.join(workdir, METRICS_FILE),
                  "".join(json.dumps(m, sort_keys=True) + "\n" for m in lines))


def read_metrics(workdir: str) -> List[Dict]:
  """All epoch lines of a run, in order; [] if it has none yet."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


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
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)  # atomic: a killed writer never leaves half a file


def _read_json(path: str) -> Dict:
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return json.load(f)


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
