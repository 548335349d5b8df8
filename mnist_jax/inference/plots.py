"""`make_figures(workdir)`: every figure of a trained run, into <workdir>/figures/.

Built from the run directory alone (config.json, metrics.jsonl, the last
checkpoint) plus the MNIST splits its config names. Figures that need conv
layers are skipped, with the reason, for a dense model.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.inference import figures, trained as trained_lib
from mnist_jax.core.errors import UserError

FORMATS = ("png", "pdf")
NUM_SAMPLES = 20  # training images in the sample grid


def _check_format(fmt: str) -> None:
  if fmt not in FORMATS:
    raise UserError(f"unknown figure format {fmt!r}: use one of {', '.join(FORMATS)}.")


def _check_digit(digit: int, num_test: int) -> None:
  if not 0 <= digit < num_test:
    raise UserError(f"--digit {digit} is not a test image index: use 0 to "
                    f"{num_test - 1}.")


def _conv_figures(model: trained_lib.TrainedModel, test: data_lib.Split,
                  digit: int) -> Dict[str, Callable]:
  layer = model.conv_stages[0]
  image, label = test.images[digit], test.labels[digit]
  return {
      "conv_kernels": lambda: figures.conv_kernels(model.first_kernels(), layer),
      "feature_maps": lambda: figures.feature_maps(
          image, model.feature_maps(image), f"Test image #{digit} (label {label})"),
  }


def _figure_makers(workdir: str, model: trained_lib.TrainedModel,
                   train: data_lib.Split, test: data_lib.Split,
                   digit: int, seed: int) -> Dict[str, Callable]:
  """name -> function drawing that figure; conv ones only for a conv model."""
  probs = model.probabilities(test.images)
  counts = figures.confusion_matrix(test.labels, probs.argmax(-1))
  pick = np.random.default_rng(seed).choice(len(train), NUM_SAMPLES, replace=False)
  metrics = run_dir.read_metrics(workdir)
  makers = {
      "train_samples": lambda: figures.train_samples(train.images[pick],
                                                     train.labels[pick]),
      "confusion_matrix": lambda: figures.confusion_figure(counts),
      "per_class_accuracy": lambda: figures.per_class_accuracy(counts),
      "misclassified": lambda: figures.misclassified(test.images, test.labels, probs),
      "learning_curves": lambda: figures.learning_curves(metrics),
      "softmax": lambda: figures.softmax_bars(
          test.images[digit], probs[digit],
          f"test #{digit}, label {test.labels[digit]}"),
  }
  if model.conv_stages:
    makers.update(_conv_figures(model, test, digit))
  return makers


def skipped_reasons(model: trained_lib.TrainedModel, metrics_lines: int) -> Dict[str, str]:
  """Figures that cannot be drawn for this run, with why."""
  reasons = {}
  if not model.conv_stages:
    name = model.config.model.name
    for fig in ("conv_kernels", "feature_maps"):
      reasons[fig] = f"model {name!r} has no conv layers"
  elif not callable(getattr(model.model, "stages", None)):
    # Feature maps are conv outputs passed through the stage's activation; a
    # model without conv stages that name one (simple_cnn: batch norm in
    # between) has no such map to show.
    reasons["feature_maps"] = (f"model {model.config.model.name!r} has no "
                               "per-stage activations to apply to its conv outputs")
  if metrics_lines == 0:
    reasons["learning_curves"] = "metrics.jsonl has no epochs yet"
  return reasons


def make_figures(workdir: str, fmt: str = "png", digit: int = 0, *,
                 mnist_dir: Optional[str] = None,
                 data: Optional[Tuple[data_lib.Split, data_lib.Split]] = None,
                 seed: int = 0) -> Tuple[Dict[str, str], Dict[str, str]]:
  """Writes the figures; returns ({name: path written}, {name: why skipped})."""
  _check_format(fmt)
  model = trained_lib.load(workdir)
  config = model.config
  train, test = data or data_lib.load_mnist(
      mnist_dir, train_split=config.data.train_split, test_split=config.data.test_split)
  _check_digit(digit, len(test))
  makers = _figure_makers(workdir, model, train, test, digit, seed)
  skipped = skipped_reasons(model, len(run_dir.read_metrics(workdir)))
  run_dir.make_folder(run_dir.check_folder(run_dir.figures_dir(workdir)))
  written = {}
  for name in figures.FIGSIZES:
    if name in makers and name not in skipped:
      path = os.path.join(run_dir.figures_dir(workdir), f"{name}.{fmt}")
      written[name] = figures.save(makers[name](), path)
  return written, skipped
