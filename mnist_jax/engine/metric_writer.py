"""One run's metrics, written to metrics.jsonl, TensorBoard and the log.

`MetricWriter` fans each epoch's line out to the three (as CLU's
MultiWriter does): every key the train step and the evaluator measure is
written to all of them, with no list of names to update. It also profiles
and, at the end, draws the misclassified digits.

Events go into the run directory itself, so `tensorboard --logdir runs/`
shows every run of a study side by side, named by its path (cnn_k3/seed_0).
metrics.jsonl stays the source of every table; the events are for looking.
Written with tensorboardX: clu's writers go through TensorFlow, which the
training process should not have to import (about 6 s of start-up).

  epoch/<key>      each numeric key of the epoch's metrics.jsonl line
                   (epoch/test_accuracy, epoch/learning_rate, ...), at the
                   global step of the epoch's end
  step/train_loss  mean training loss of the steps since the previous point
                   (or since the epoch began), every config.log_every_steps
  hparams          the run's config.json, one hyperparameter per leaf
                   ('model.kernel_sizes', lists as text), against the epoch/*
                   test, validation and train metrics: TensorBoard's HParams
                   tab lists a study's runs side by side
  misclassified/*  at the end, a grid of the most confidently misclassified
                   test digits and a table of their labels

A resumed run opens its writer with purge_step = the restored step + 1:
TensorBoard then hides what the killed process logged past the checkpoint,
so a redone epoch is not shown twice.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.run_dir import PROFILE_DIR
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.engine.mesh import to_host
from mnist_jax.engine.state import TrainState, eval_variables


def _import_summary_writer():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX.writer imports torch whenever it is installed (it is, in the
  [bench] and [test] extras) only to accept torch tensors as values; that cost
  2.3 s of every train command's start-up here (`python -X importtime`). We
  write numpy, so torch is hidden for that one import (None in sys.modules
  makes `import torch` raise ImportError, which tensorboardX catches), unless
  this process has imported torch already (the benchmark's --against torch).
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


SummaryWriter = _import_summary_writer()
from tensorboardX.summary import hparams as tensorboardX_hparams  # noqa: E402

GRID_COLUMNS = 8  # tensorboardX's make_grid lays images out 8 to a row
_NOT_SCALARS = ("epoch", "step", "test_count", "val_count")


class StepProfiler:
  """A jax.profiler trace of `steps` training steps into `log_dir`.

  Starts after the first dispatch (which compiles and warms up) and stops
  once `steps` more steps have run, waiting for the device at both ends so
  the trace holds whole steps. Viewable in TensorBoard's profile plugin, or
  in Perfetto (ui.perfetto.dev) from perfetto_trace.json.gz.
  """

  def __init__(self, log_dir: str, steps: int):
    self.log_dir, self.steps = log_dir, int(steps)
    self.tracing, self.traced, self.done = False, 0, self.steps == 0

  def after_dispatch(self, steps: int, state) -> None:
    if self.done:
      return
    if not self.tracing:
      jax.block_until_ready(state)
      jax.profiler.start_trace(self.log_dir, create_perfetto_trace=True)
      self.tracing = True
      return
    self.traced += steps
    if self.traced >= self.steps:
      self.stop(state)

  def stop(self, state=None) -> None:
    if self.tracing and not self.done:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
    self.tracing, self.done = False, True


def write_pending(events: SummaryWriter) -> None:
  """Puts every event added so far into the events file.

  tensorboardX's `flush` writes only the events its background thread has
  taken from its queue: a SIGKILL after it lost the epoch's points (measured:
  a killed two-process run kept no epoch/* point of its finished epoch 1).
  Stopping the thread writes the rest; a new one then takes over the same
  queue and file, as tensorboardX's own `EventFileWriter.reopen` does.
  """
  writer = events._get_file_writer().event_writer
  writer._worker.stop()  # writes what is queued, then returns
  writer._ev_writer.flush()
  writer._worker = type(writer._worker)(writer._event_queue, writer._ev_writer,
                                        writer._flush_secs)
  writer._worker.start()


def mistakes_table(labels_N: np.ndarray, probs_NxC: np.ndarray,
                   idx_M: np.ndarray) -> str:
  """A Markdown table laid out like the image grid: 'label → predicted (p)'."""
  cells = [f"{labels_N[i]} → {probs_NxC[i].argmax()} ({probs_NxC[i].max():.0%})"
           for i in idx_M]
  rows = [cells[r:r + GRID_COLUMNS] for r in range(0, len(cells), GRID_COLUMNS)]
  width = len(rows[0]) if rows else 1
  head = "| " + " | ".join(f"col {c + 1}" for c in range(width)) + " |"
  lines = [head, "|" + " --- |" * width]
  lines += ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
  return "\n".join(lines)


def _loss_totals(sums: Dict, index: Optional[int] = None) -> Tuple[float, int]:
  """(loss, count) sums of the loop's running sums (entry `index` of stacked
  ones): a host sync."""
  totals = to_host({k: sums[k] for k in ("loss", "count")})
  if index is not None:
    totals = {k: v[index] for k, v in totals.items()}
  return float(totals["loss"]), int(totals["count"])


_SHORT_NAMES = {"accuracy": "acc"}


def epoch_line(m: Dict, who: str = "") -> str:
  """The epoch's log line: each split's measurements (loss and accuracy
  first, then the others by name), the epoch's time and speed."""
  parts = [f"{who}epoch {m['epoch']:3d}"]
  for split in ("train", "val", "test"):
    names = [k[len(split) + 1:] for k in m if k.startswith(f"{split}_")
             and k not in run_dir.TIMING_KEYS and k != f"{split}_count"]
    names.sort(key=lambda n: (n != "loss", n != "accuracy", n))
    if names:
      parts.append(f"{split} " + " ".join(
          f"{_SHORT_NAMES.get(n, n)} {m[f'{split}_{n}']:.4f}" for n in names))
  parts.append(f"{m['epoch_time_s']:.1f}s ({m['train_images_per_s']:,.0f} img/s)")
  return "  ".join(parts)


# The epoch/* scalars the HParams tab shows beside each run's hyperparameters.
HPARAM_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss",
                  "train_accuracy", "train_loss")


def hparam_value(value):
  """A config leaf as TensorBoard's hparams take it: a number, bool or text."""
  return value if isinstance(value, (bool, int, float, str)) else str(value)


def write_hparams(events: SummaryWriter, config: ml_collections.ConfigDict) -> None:
  """The run's config as hparams (the plugin's experiment and session summaries)
  in the run's own events file, so that the run directory is the HParams session
  (tensorboardX's add_hparams would write them to a new subfolder)."""
  hparams = {k: hparam_value(v) for k, v in run_dir.flat_config(config).items()}
  metrics = {f"epoch/{key}": None for key in HPARAM_METRICS}
  for summary in tensorboardX_hparams(hparams, metrics):
    events._get_file_writer().add_summary(summary)


class MetricWriter:
  """One run's metric writer (and profiler) for one process's life.

  `write_epoch` appends the epoch's line to metrics.jsonl, adds its numbers
  to TensorBoard and logs it. Only process 0 writes files (`enabled`); every
  process profiles itself and logs (`log`, None: no log line; `who` starts
  each line). `config` is the run's own (its seed's); `start_step` is the
  step the run (re)starts from.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, start_step: int,
               enabled: bool = True, profile: bool = True,
               log: Optional[Callable[[str], None]] = None, who: str = ""):
    self.workdir, self.enabled, self.log, self.who = workdir, enabled, log, who
    self.every = int(config.log_every_steps)
    self.mistakes = int(config.log_misclassified)
    self.eval_batch_size = config.eval_batch_size
    # tensorboardX names files by the second and host only: a nanosecond
    # suffix keeps a resumed process's file apart from, and sorted after, the
    # killed one's (TensorBoard reads a directory's files in name order).
    self.events = (SummaryWriter(workdir, purge_step=start_step + 1,
                                 filename_suffix=f".{time.time_ns()}.{os.getpid()}")
                   if enabled else None)
    self.profiler = StepProfiler(os.path.join(workdir, PROFILE_DIR),
                                 config.profile_steps if profile else 0)
    if self.events:
      write_hparams(self.events, config)
    self._base = (0.0, 0)  # (loss, count) sums of this epoch's sums at the last point

  def after_span(self, start: int, stop: int, state, sums: Dict,
                 index: Optional[int] = None) -> None:
    """After a dispatch that trained global steps start+1..stop; `index`: this
    run's entry of stacked sums (several seeds trained together)."""
    self.profiler.after_dispatch(stop - start, state)
    if not (self.events and self.every and stop // self.every > start // self.every):
      return
    loss, count = _loss_totals(sums, index)
    self.train_loss(stop, (loss - self._base[0]) / (count - self._base[1]))
    self._base = (loss, count)

  def resume_from(self, sums: Dict, index: Optional[int] = None) -> None:
    """The epoch's sums a run resumes with (mid-epoch: not zero), so that its
    first point is the mean since the checkpoint, not since the epoch began."""
    if self.events and self.every:
      self._base = _loss_totals(sums, index)

  def train_loss(self, step: int, value: float) -> None:
    if self.events:
      self.events.add_scalar("step/train_loss", value, step)

  def write_epoch(self, metrics: Dict) -> None:
    """The epoch's line, to every destination."""
    if self.enabled:
      run_dir.append_metrics(self.workdir, metrics)
    self.tensorboard_epoch(metrics)
    if self.log:
      self.log(epoch_line(metrics, self.who))

  def tensorboard_epoch(self, metrics: Dict) -> None:
    """The epoch's numbers as epoch/<key> points, at the step of the epoch's end."""
    if not self.events:
      return
    for key, value in metrics.items():
      if key not in _NOT_SCALARS and isinstance(value, (int, float)):
        self.events.add_scalar(f"epoch/{key}", value, metrics["step"])
    write_pending(self.events)  # a kill loses at most the current epoch's points
    self._base = (0.0, 0)  # the loop starts the next epoch's sums from zero

  def misclassified(self, images_NxHxWx1: np.ndarray, labels_N: np.ndarray,
                    probs_NxC: np.ndarray, step: Optional[int] = None) -> None:
    """The most confidently misclassified images as one grid, labels beside."""
    idx_M = eval_lib.confident_mistakes(labels_N, probs_NxC, self.mistakes)
    if not self.events or not len(idx_M):
      return
    self.events.add_images("misclassified/images", images_NxHxWx1[idx_M], step,
                           dataformats="NHWC")
    self.events.add_text("misclassified/labels",
                         mistakes_table(labels_N, probs_NxC, idx_M), step)

  def final_state(self, state: TrainState, split: data_lib.Split, mesh,
                  step: int) -> None:
    """At the run's end: the misclassified grid of `split` (all processes call)."""
    if self.mistakes:
      probs_NxC = eval_lib.probabilities(state.apply_fn, *eval_variables(state),
                                         split.images, self.eval_batch_size, mesh)
      self.misclassified(split.images, split.labels, probs_NxC, step)

  def close(self) -> None:
    self.profiler.stop()
    if self.events:
      self.events.close()
