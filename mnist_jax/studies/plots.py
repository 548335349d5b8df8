"""Study figures with matplotlib (Agg backend), each saved as PNG and PDF."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, no display (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnist_jax.studies.results import PointResult  # noqa: E402
from mnist_jax.studies.stats import MeanStd  # noqa: E402

Curve = Tuple[Sequence[float], Sequence[MeanStd]]  # x values, y statistics


def save(fig, stem: str) -> List[str]:
  """Writes <stem>.png and <stem>.pdf and closes the figure."""
  os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
  paths = [f"{stem}.png", f"{stem}.pdf"]
  for path in paths:
    fig.savefig(path, dpi=150, bbox_inches="tight")
  plt.close(fig)
  return paths


def _std(stats: Sequence[MeanStd]) -> np.ndarray:
  return np.nan_to_num(np.array([s.std for s in stats]))  # one seed: no bar


def accuracy_vs_params(points: Sequence[PointResult], stem: str,
                       title: str = "") -> List[str]:
  """Final test accuracy (mean ± std over seeds) against parameter count."""
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for p in points:
    if not p.runs:
      continue
    acc = p.final("test_accuracy")
    ax.errorbar(p.extra("num_params").mean, 100 * acc.mean,
                yerr=100 * _std([acc]), fmt="o", capsize=3, label=p.point.title)
  ax.set_xscale("log")
  return _finish(fig, ax, "parameters", title, stem)


def learning_curves(points: Sequence[PointResult], stem: str,
                    title: str = "") -> List[str]:
  """Test accuracy per epoch, mean over seeds with a ±1 std band."""
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for p in points:
    if p.runs:
      stats = p.curve("test_accuracy")
      _band(ax, range(1, len(stats) + 1), stats, p.point.title)
  return _finish(fig, ax, "epoch", title, stem)


def _finish(fig, ax, xlabel: str, title: str, stem: str) -> List[str]:
  """Labels, grid and legend every accuracy plot shares; saves PNG and PDF."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return save(fig, stem)


def _band(ax, xs, stats: Sequence[MeanStd], label: str) -> None:
  xs = np.asarray(list(xs), np.float64)
  mean = 100 * np.array([s.mean for s in stats])
  std = 100 * _std(stats)
  ax.plot(xs, mean, marker="o", label=label)
  ax.fill_between(xs, mean - std, mean + std, alpha=0.2)


def curves(panels: Dict[str, Dict[str, Curve]], xlabels: Dict[str, str],
           stem: str) -> List[str]:
  """One panel per entry of `panels` ({panel: {label: (xs, stats)}}), side by side."""
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5),
                           squeeze=False)
  for ax, (panel, series) in zip(axes[0], panels.items()):
    for label, (xs, stats) in series.items():
      _band(ax, xs, stats, label)
    ax.set_xlabel(xlabels[panel])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(panel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return save(fig, stem)
