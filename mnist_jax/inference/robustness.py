"""Test accuracy of a trained run on shifted and rotated test images.

A shift by k pixels moves the digit k pixels right, left, down or up (zeros
fill the gap; ink pushed past the edge is lost); the accuracy at k is the
mean over those four directions. Rotations are about the image centre,
bilinear, zeros outside. Results go to the run's extras.json under
'robustness', so tables are built from the run directory.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np
from scipy import ndimage

from mnist_jax.core import run_dir
from mnist_jax.core.data import Split
from mnist_jax.engine import evaluate as eval_lib, mesh as mesh_lib, restore as restore_lib

DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (down, right) steps
EXTRAS_KEY = "robustness"


def shift(images_NxHxWxC: np.ndarray, down: int, right: int) -> np.ndarray:
  """Moves every image `down` rows and `right` columns, filling with zeros."""
  n, h, w, c = images_NxHxWxC.shape
  out = np.zeros_like(images_NxHxWxC)
  if abs(down) >= h or abs(right) >= w:
    return out
  src_r = slice(max(0, -down), h - max(0, down))
  dst_r = slice(max(0, down), h - max(0, -down))
  src_c = slice(max(0, -right), w - max(0, right))
  dst_c = slice(max(0, right), w - max(0, -right))
  out[:, dst_r, dst_c] = images_NxHxWxC[:, src_r, src_c]
  return out


def rotate(images_NxHxWxC: np.ndarray, degrees: float) -> np.ndarray:
  """Rotates every image counter-clockwise by `degrees` about its centre."""
  if degrees == 0:
    return images_NxHxWxC
  out = ndimage.rotate(images_NxHxWxC.astype(np.float32), degrees, axes=(2, 1),
                       reshape=False, order=1, mode="constant", cval=0.0)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def curves(accuracy: Callable[[np.ndarray], float], test: Split,
           shifts: Sequence[int], angles: Sequence[float]) -> Dict:
  """Accuracy per shift (mean over the four directions) and per angle."""
  by_shift = []
  for k in shifts:
    moved = [shift(test.images, k * d, k * r) for d, r in DIRECTIONS] if k else [test.images]
    by_shift.append(float(np.mean([accuracy(images) for images in moved])))
  by_angle = [accuracy(rotate(test.images, a)) for a in angles]
  return {"shift_px": list(shifts), "shift_accuracy": by_shift,
          "rotation_deg": list(angles), "rotation_accuracy": by_angle}


def accuracy_fn(state, labels: np.ndarray,
                batch_size: int) -> Callable[[np.ndarray], float]:
  """images -> accuracy of `state` on them, through the engine's evaluator
  (compiled once per model, so all the transformed sets of a run share it)."""
  mesh = mesh_lib.make_mesh()
  return lambda images: eval_lib.evaluate(state, Split(images=images, labels=labels),
                                          batch_size, mesh)["accuracy"]


def evaluate_run(run, load_data, shifts: Sequence[int],
                 angles: Sequence[float]) -> Dict:
  """Robustness curves of a finished study run, computed once and stored."""
  done = run_dir.read_extras(run.workdir).get(EXTRAS_KEY)
  if done and done["shift_px"] == list(shifts) and done["rotation_deg"] == list(angles):
    return done
  _, test = load_data()
  state = restore_lib.restore_state(run.workdir, run.config,
                                    which=restore_lib.selected_checkpoint(run.config))
  result = curves(accuracy_fn(state, test.labels, run.config.eval_batch_size),
                  test, shifts, angles)
  run_dir.update_extras(run.workdir, **{EXTRAS_KEY: result})
  return result
