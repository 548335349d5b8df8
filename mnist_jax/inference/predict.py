"""Recognise digits in a user's own image files with a trained run.

`predict_files` reads each file (mnist_jax.inference.digits), runs the model once on all
the good ones and returns one result per path, in order; a bad file becomes a
result with an `error`, so one broken file never stops the others. A top
probability under `uncertain_below` is reported as uncertain, in words and in
JSON. Text lines show a file name's control characters escaped (a newline as
\\n), so each result stays one line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from mnist_jax.inference import digits, trained as trained_lib
from mnist_jax.core.errors import UserError
from mnist_jax.inference.trained import TrainedModel


UNCERTAIN_BELOW = 0.8  # a top probability under this is reported as uncertain
FIGURE_LIMIT = 12  # pictures drawn by --figure, the first ones


@dataclasses.dataclass
class Prediction:
  path: str
  image: Optional[np.ndarray] = None  # 28x28x1 uint8, as the network saw it
  probs: Optional[np.ndarray] = None  # (10,) softmax output
  error: Optional[str] = None
  steps: Optional[Dict[str, np.ndarray]] = None  # digits.trace's, when kept for a figure

  def top(self, k: int) -> List[Tuple[int, float]]:
    """The k most probable digits with their probabilities, best first."""
    order = np.argsort(-self.probs)[:k]
    return [(int(d), float(self.probs[d])) for d in order]

  def uncertain(self, below: float = UNCERTAIN_BELOW) -> bool:
    return self.top(1)[0][1] < below

  def to_json(self, k: int, uncertain_below: float = UNCERTAIN_BELOW) -> dict:
    if self.error:
      return {"path": self.path, "error": self.error}
    digit, prob = self.top(1)[0]
    return {"path": self.path, "digit": digit, "probability": prob,
            "uncertain": self.uncertain(uncertain_below),
            "top": [{"digit": d, "probability": p} for d, p in self.top(k)]}


def expand_paths(paths: Iterable[str]) -> List[str]:
  """Files as given; a folder becomes its files (not sub-folders), sorted by name."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      names = sorted(n for n in os.listdir(path) if not n.startswith("."))
      out += [os.path.join(path, n) for n in names
              if not os.path.isdir(os.path.join(path, n))]
    else:
      out.append(path)
  if not out:
    raise UserError("no image files given: pass image files or folders of images.")
  return out


def read_all(paths: List[str], preprocess: bool = True,
             settings: digits.Settings = digits.Settings(),
             keep_steps: int = 0) -> List[Prediction]:
  """Each path's 28x28 image, or its error message; the steps that made the
  first `keep_steps` images are kept (for a figure)."""
  results = []
  for path in paths:
    try:
      steps = digits.load_steps(path, preprocess, settings)
      kept = sum(r.steps is not None for r in results) < keep_steps
      results.append(Prediction(path, image=steps["network input"],
                                steps=steps if kept else None))
    except UserError as e:
      results.append(Prediction(path, error=str(e)))
  return results


def predict_files(trained: TrainedModel, paths: List[str], preprocess: bool = True,
                  settings: digits.Settings = digits.Settings(),
                  keep_steps: int = 0) -> List[Prediction]:
  """One Prediction per path (folders expanded), in order."""
  results = read_all(expand_paths(paths), preprocess, settings, keep_steps)
  good = [r for r in results if r.error is None]
  if good:
    probs = trained.probabilities(np.stack([r.image for r in good]),
                                  batch_size=len(good))
    for r, p in zip(good, probs):
      r.probs = p
  return results


def printable(text: str) -> str:
  """`text` with control characters escaped (a newline as \\n): one line."""
  return "".join(c if c.isprintable() or c == " " else
                 c.encode("unicode_escape").decode("ascii") for c in text)


def describe(result: Prediction, k: int = 1,
             uncertain_below: float = UNCERTAIN_BELOW) -> str:
  """`path: The number is probably a 5 (97.3%)` ('an 8'), plus the top k if k > 1;
  `path: Uncertain: the number may be a 5 (41.0%, under 80%)` when unsure."""
  digit, prob = result.top(1)[0]
  article = "an" if digit == 8 else "a"  # the only digit said with a vowel sound first
  line = f"{printable(result.path)}: The number is probably {article} {digit} ({prob:.1%})"
  if result.uncertain(uncertain_below):
    line = (f"{printable(result.path)}: Uncertain: the number may be {article} {digit} "
            f"({prob:.1%}, under {uncertain_below * 100:g}%)")
  if k > 1:
    line += "; top " + str(k) + ": " + ", ".join(
        f"{d} ({p:.1%})" for d, p in result.top(k))
  return line


def check_figure_path(path: str) -> None:
  """A UserError unless a figure can be written to `path`: checked before any
  prediction, so that a bad --figure does not end a run of predictions."""
  from matplotlib.figure import Figure  # matplotlib: only when a figure is asked for
  folder = os.path.dirname(os.path.abspath(path))
  suffix = os.path.splitext(path)[1].lstrip(".").lower()
  formats = Figure().canvas.get_supported_filetypes()
  if os.path.isdir(path):
    raise UserError(f"--figure {path} is a folder: give a file name, e.g. "
                    f"{os.path.join(path, 'predictions.png')}.")
  if suffix not in formats:
    raise UserError(f"--figure {path}: unknown image format {suffix!r}; end the name "
                    "with .png or .pdf.")
  if not os.path.isdir(folder):
    raise UserError(f"--figure {path}: folder {folder} does not exist; create it or "
                    "choose another path.")
  if not os.access(folder, os.W_OK):
    raise UserError(f"--figure {path}: folder {folder} is not writable; choose "
                    "another path.")


def save_figure(results: List[Prediction], path: str, total: int) -> None:
  """Each step of the pictures whose steps were kept, the prediction last;
  the title says how many of the `total` pictures are left out."""
  from mnist_jax.inference import figures  # matplotlib: only when a figure is asked for
  shown = [r for r in results if r.steps is not None]
  if not shown:
    return
  titles = [f"{printable(os.path.basename(r.path))[:24]}\n{r.top(1)[0][0]} "
            f"({r.top(1)[0][1]:.0%})" for r in shown]
  left_out = f"; {total - len(shown)} left out" if total > len(shown) else ""
  try:
    figures.save(figures.preprocessing_steps(
        [r.steps for r in shown], titles,
        f"The first {len(shown)} of {total} pictures, step by step{left_out}"), path)
  except OSError as e:
    raise UserError(f"--figure {path}: cannot write it ({e.strerror or e}); choose "
                    "another path.") from None


def report_predictions(workdir: str, paths: List[str], top: int = 1,
                       as_json: bool = False, figure: Optional[str] = None,
                       preprocess: bool = True,
                       settings: digits.Settings = digits.Settings(),
                       uncertain_below: float = UNCERTAIN_BELOW,
                       figure_limit: int = FIGURE_LIMIT) -> int:
  """Prints one line (or JSON) per file; exit status 1 if any file failed."""
  if figure:
    check_figure_path(figure)
  results = predict_files(trained_lib.load(workdir), paths, preprocess, settings,
                          keep_steps=figure_limit if figure else 0)
  for r in results:
    if r.error:
      print(f"error: {printable(r.error)}", file=sys.stderr)
    elif not as_json:
      print(describe(r, top, uncertain_below))
  if as_json:
    print(json.dumps([r.to_json(top, uncertain_below) for r in results], indent=2))
  if figure:
    good = sum(r.error is None for r in results)
    save_figure(results, figure, good)
    if good > figure_limit:
      print(f"note: {figure} shows the first {figure_limit} of {good} pictures, "
            f"{good - figure_limit} left out (--figure_limit sets how many)",
            file=sys.stderr)
  return 1 if any(r.error for r in results) else 0
