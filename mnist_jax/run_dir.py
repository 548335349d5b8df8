"""The run directory: the one place results live.

  <workdir>/config.json     the run's full config
  <workdir>/metrics.jsonl   one JSON object per epoch (keys in METRIC_KEYS)
  <workdir>/checkpoints/    orbax checkpoints of the train state
  <workdir>/figures/        figures drawn from the above (python -m mnist_jax plot)

Writers and readers (tables, plots) both go through this module, so metric
names cannot drift apart.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

import ml_collections

from mnist_jax.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
FIGURES_DIR = "figures"

# Every epoch line of metrics.jsonl has exactly these keys.
METRIC_KEYS = (
    "epoch", "step", "learning_rate",
    "train_loss", "train_accuracy",
    "test_loss", "test_accuracy", "test_count",
    "epoch_time_s", "train_time_s", "train_images_per_s",
)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


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
  with open(os.path.join(workdir, METRICS_FILE), "a") as f:
    f.write(json.dumps(metrics, sort_keys=True) + "\n")


def read_metrics(workdir: str) -> List[Dict]:
  """All epoch lines of a run, in order; [] if it has none yet."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def checkpoint_dir(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def figures_dir(workdir: str) -> str:
  return os.path.join(workdir, FIGURES_DIR)
