"""Figures of a trained run, one function each, drawn with matplotlib.

Every figure of a run is a `matplotlib.figure.Figure` of a fixed size
(FIGSIZES, at DPI dots per inch), so a PNG's pixel size is known in advance;
`predict --figure`'s grows with the pictures and steps it shows. Figures are made
without pyplot: no global state and no display, PNGs rendered by Agg.
`mnist_jax.inference.plots.make_figures` builds them all from a run directory.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mnist_jax.core import run_dir
from mnist_jax.engine import evaluate as eval_lib

DPI = 100
# One entry per run_dir.FIGURE_NAMES (what `train --force` deletes).
FIGSIZES: Dict[str, Tuple[float, float]] = {
    "train_samples": (8.0, 7.0),
    "conv_kernels": (10.0, 5.5),
    "feature_maps": (13.0, 6.0),
    "confusion_matrix": (7.5, 6.5),
    "per_class_accuracy": (7.5, 4.0),
    "misclassified": (12.0, 8.5),
    "learning_curves": (11.0, 4.0),
    "softmax": (9.0, 3.5),
}


def pixel_size(name: str) -> Tuple[int, int]:
  """(width, height) in pixels of figure `name` saved as PNG."""
  w, h = FIGSIZES[name]
  return round(w * DPI), round(h * DPI)


def new_figure(figsize: Tuple[float, float]) -> Figure:
  fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def save(fig: Figure, path: str) -> str:
  """Writes `fig` (format from the suffix: .png, .pdf) at the figure's size,
  whole or not at all (run_dir.atomic_file)."""
  with run_dir.atomic_file(path, "wb") as f:
    fig.savefig(f, format=os.path.splitext(path)[1][1:].lower(), dpi=DPI)
  return path


def _show_digit(ax, image_HxWx1: np.ndarray, title: str, fontsize: int = 10) -> None:
  """A digit as the network sees it: light strokes on black."""
  ax.imshow(image_HxWx1[..., 0], cmap="gray", vmin=0, vmax=255)
  ax.set_title(title, fontsize=fontsize)
  ax.set_axis_off()


def image_grid(images: np.ndarray, titles: Sequence[str], cols: int,
               figsize: Tuple[float, float], suptitle: str,
               fontsize: int = 10) -> Figure:
  """Digits in a grid of `cols` columns, one title each; spare cells blank."""
  rows = max(1, -(-len(images) // cols))
  fig = new_figure(figsize)
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for ax, image, title in zip(axes.flat, images, titles):
    _show_digit(ax, image, title, fontsize)
  fig.suptitle(suptitle)
  return fig


def train_samples(images: np.ndarray, labels: np.ndarray) -> Figure:
  return image_grid(images, [f"label {l}" for l in labels], 5,
                    FIGSIZES["train_samples"],
                    f"{len(images)} random training images and their labels")


def conv_kernels(kernels_KxKxCinxF: np.ndarray, layer: str) -> Figure:
  """Each filter of the first conv layer, blue (negative) to red (positive)."""
  k, _, _, f = kernels_KxKxCinxF.shape
  cols = min(f, 8)
  fig = new_figure(FIGSIZES["conv_kernels"])
  axes = fig.subplots(-(-f // cols), cols, squeeze=False)
  vmax = float(np.abs(kernels_KxKxCinxF).max()) or 1.0
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i < f:
      im = ax.imshow(kernels_KxKxCinxF[:, :, 0, i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
      ax.set_title(f"filter {i}", fontsize=8)
  fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
  fig.suptitle(f"Learned {k}x{k} kernels of the first conv layer ({layer}): "
               "low-level stroke and edge detectors")
  return fig


def strongest_channels(maps_HxWxF: np.ndarray, n: int) -> np.ndarray:
  """Indices of the `n` channels with the largest mean activation, strongest first."""
  return np.argsort(-maps_HxWxF.mean(axis=(0, 1)))[:n]


def feature_maps(image_HxWx1: np.ndarray, stages: List[np.ndarray],
                 title: str, per_stage: int = 8) -> Figure:
  """The input, then one row per conv stage: its most active channels."""
  fig = new_figure(FIGSIZES["feature_maps"])
  axes = fig.subplots(len(stages), per_stage + 1, squeeze=False)
  levels = _level_names(len(stages))
  for row, (maps, level) in enumerate(zip(stages, levels)):
    axes[row, 0].set_axis_off()
    if row == 0:
      _show_digit(axes[0, 0], image_HxWx1, "input")
    for col, ch in enumerate(strongest_channels(maps, per_stage), start=1):
      axes[row, col].imshow(maps[..., ch], cmap="viridis")
      axes[row, col].set_axis_off()
      axes[row, col].set_title(f"ch {ch}", fontsize=8)
    h, w, f = maps.shape
    axes[row, 1].text(-0.15, 0.5, f"stage {row + 1}\n{level}\n{h}x{w}x{f}",
                      transform=axes[row, 1].transAxes, ha="right", va="center",
                      fontsize=9)
  fig.suptitle(f"{title}: the {per_stage} most active channels of each conv stage "
               "(after the activation)")
  return fig


def _level_names(n: int) -> List[str]:
  names = {1: ["low level"], 2: ["low level", "high level"],
           3: ["low level", "mid level", "high level"]}
  return names.get(n, ["low level"] + ["mid level"] * (n - 2) + ["high level"])


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray,
                     num_classes: int = 10) -> np.ndarray:
  """counts[true, predicted]."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predicted), 1)
  return counts


def confusion_figure(counts_CxC: np.ndarray) -> Figure:
  fig = new_figure(FIGSIZES["confusion_matrix"])
  ax = fig.subplots()
  # Log colour scale: the diagonal is ~1000, the errors are 0-20.
  im = ax.imshow(np.log1p(counts_CxC), cmap="Blues")
  c = len(counts_CxC)
  for t in range(c):
    for p in range(c):
      light = counts_CxC[t, p] > np.expm1(0.6 * np.log1p(counts_CxC.max()))
      ax.text(p, t, str(counts_CxC[t, p]), ha="center", va="center", fontsize=8,
              color="white" if light else "black")
  ax.set(xticks=range(c), yticks=range(c), xlabel="predicted", ylabel="true")
  fig.colorbar(im, ax=ax, label="log(1 + count)")
  accuracy = np.trace(counts_CxC) / counts_CxC.sum()
  ax.set_title(f"Confusion matrix on {counts_CxC.sum():,} test images "
               f"(accuracy {accuracy:.2%})")
  return fig


def per_class_accuracy(counts_CxC: np.ndarray) -> Figure:
  acc = np.diag(counts_CxC) / np.maximum(counts_CxC.sum(axis=1), 1)
  fig = new_figure(FIGSIZES["per_class_accuracy"])
  ax = fig.subplots()
  bars = ax.bar(range(len(acc)), acc * 100, color="tab:blue")
  ax.bar_label(bars, labels=[f"{a:.1%}" for a in acc], fontsize=8)
  low = max(0.0, float(acc.min()) * 100 - 5)
  ax.set(xticks=range(len(acc)), xlabel="true digit", ylabel="accuracy (%)",
         ylim=(low, 101), title="Test accuracy of each digit")
  return fig


def misclassified(images: np.ndarray, labels: np.ndarray, probs_NxC: np.ndarray,
                  n: int = 24) -> Figure:
  idx = eval_lib.confident_mistakes(labels, probs_NxC, n)
  pred = probs_NxC[idx].argmax(-1)
  titles = [f"#{i}: true {labels[i]}\npred {p} ({probs_NxC[i, p]:.0%})"
            for i, p in zip(idx, pred)]
  total = int((probs_NxC.argmax(-1) != labels).sum())
  return image_grid(images[idx], titles, 6, FIGSIZES["misclassified"],
                    f"The {len(idx)} most confidently misclassified test images "
                    f"(of {total} errors)", fontsize=9)


def learning_curves(metrics: List[Dict]) -> Figure:
  """Loss and accuracy per epoch, train and test, from metrics.jsonl lines."""
  epochs = [m["epoch"] for m in metrics]
  fig = new_figure(FIGSIZES["learning_curves"])
  ax_loss, ax_acc = fig.subplots(1, 2)
  for split, style in (("train", "o-"), ("test", "s--")):
    ax_loss.plot(epochs, [m[f"{split}_loss"] for m in metrics], style, label=split)
    ax_acc.plot(epochs, [100 * m[f"{split}_accuracy"] for m in metrics], style,
                label=split)
  ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
  ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend()
    ax.xaxis.get_major_locator().set_params(integer=True)
  fig.suptitle(f"Learning curves ({len(metrics)} epochs)")
  return fig


def softmax_bars(image_HxWx1: np.ndarray, probs_C: np.ndarray, title: str) -> Figure:
  """The image and the network's probability for each digit."""
  fig = new_figure(FIGSIZES["softmax"])
  ax_img, ax_bar = fig.subplots(1, 2, width_ratios=[1, 2.6])
  best = int(probs_C.argmax())
  _show_digit(ax_img, image_HxWx1, title)
  colors = ["tab:orange" if d == best else "tab:blue" for d in range(len(probs_C))]
  bars = ax_bar.bar(range(len(probs_C)), probs_C, color=colors)
  ax_bar.bar_label(bars, labels=[f"{p:.1%}" if p >= 0.001 else "" for p in probs_C],
                   fontsize=8)
  ax_bar.set(xticks=range(len(probs_C)), xlabel="digit", ylabel="probability",
             ylim=(0, 1.1),
             title=f"Softmax output: probably a {best} ({probs_C[best]:.1%})")
  return fig


def preprocessing_steps(steps: Sequence[Dict[str, np.ndarray]], titles: Sequence[str],
                        suptitle: str) -> Figure:
  """One row per picture: each step of `digits.trace`, the prediction last.

  Every step is drawn white on black as it is computed (ink = 1), except the
  picture itself, drawn as given.
  """
  names = list(dict.fromkeys(name for row in steps for name in row))
  fig = new_figure((1.9 * len(names), 2.0 * len(steps) + 0.6))
  axes = fig.subplots(len(steps), len(names), squeeze=False)
  for r, (row, title) in enumerate(zip(steps, titles)):
    for c, name in enumerate(names):
      ax = axes[r, c]
      ax.set_axis_off()
      if name in row:
        image = np.asarray(row[name], np.float32)
        image = image[..., 0] / 255.0 if image.ndim == 3 else image
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title if name == names[-1] else (name if r == 0 else ""),
                     fontsize=8)
  fig.suptitle(suptitle)
  return fig
