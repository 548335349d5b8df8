"""Photo-like pictures of MNIST test digits, and `predict`'s accuracy on them.

Each picture is one test digit, enlarged and composited as ink onto paper,
with one distortion (or all of them, "everything") a photo or scan of a
digit on paper shows. `write` draws them from a seed, so the same seed gives
the same files; `score` predicts each distortion's folder as `predict` does
(`predict_files`) and counts the right answers. `experiments/photo_benchmark.py`
runs both and prints the table.
"""

from __future__ import annotations

import io
import json
import os
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image
from scipy import ndimage

Rng = np.random.Generator


def plain_sheet(rng: Rng, h: int, w: int, paper: float) -> np.ndarray:
  """Paper of one level with faint fibre texture (a blurred noise of 2%)."""
  texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), 2.0)
  return paper + 0.02 * texture / max(texture.std(), 1e-6)


def digit_alpha(pixels_28x28: np.ndarray, height: int, angle: float = 0.0) -> np.ndarray:
  """The digit's ink coverage (0..1), enlarged so its 28 pixels become `height`."""
  image = Image.fromarray(pixels_28x28).resize((height, height), Image.Resampling.BICUBIC)
  if angle:
    image = image.rotate(angle, Image.Resampling.BICUBIC, expand=True)
  return np.asarray(image, np.float32) / 255.0


def composite(rng: Rng, pixels: np.ndarray, scale=(0.45, 0.75), angle: float = 0.0,
              paper=(0.72, 0.95), ink=(0.05, 0.3)) -> np.ndarray:
  """A grey sheet HxW with the digit in ink at a random place and size."""
  h, w = int(rng.integers(120, 241)), int(rng.integers(120, 241))
  alpha = digit_alpha(pixels, int(min(h, w) * rng.uniform(*scale)), angle)
  ah, aw = alpha.shape
  h, w = max(h, ah + 4), max(w, aw + 4)
  sheet = plain_sheet(rng, h, w, rng.uniform(*paper))
  top, left = int(rng.integers(2, h - ah - 1)), int(rng.integers(2, w - aw - 1))
  region = sheet[top:top + ah, left:left + aw]
  region[:] = region * (1.0 - alpha) + rng.uniform(*ink) * alpha
  return sheet


def gradient(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """Light falling off linearly in a random direction, to 45-65% at the far side."""
  h, w = sheet.shape
  theta = rng.uniform(0, 2 * np.pi)
  rows, cols = np.indices((h, w))
  t = (np.cos(theta) * cols / w + np.sin(theta) * rows / h)
  t = (t - t.min()) / max(np.ptp(t), 1e-6)
  return sheet * (1.0 - rng.uniform(0.35, 0.55) * t)


def shadow(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """A soft-edged shadow (a hand or a phone) over a random half-plane."""
  h, w = sheet.shape
  theta = rng.uniform(0, 2 * np.pi)
  rows, cols = np.indices((h, w))
  side = np.cos(theta) * (cols - w / 2) + np.sin(theta) * (rows - h / 2)
  inside = (side > rng.uniform(-0.2, 0.3) * min(h, w)).astype(np.float32)
  soft = ndimage.gaussian_filter(inside, rng.uniform(3.0, 10.0))
  return sheet * (1.0 - rng.uniform(0.35, 0.55) * soft)


def noise(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """Sensor noise (sigma 5-10% of full scale) and a few dark specks of dust."""
  out = sheet + rng.normal(0.0, rng.uniform(0.05, 0.1), sheet.shape)
  h, w = sheet.shape
  for _ in range(int(rng.integers(3, 9))):
    r, c, rad = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(1, 3))
    out[max(r - rad, 0):r + rad, max(c - rad, 0):c + rad] *= 0.4
  return out


def blur(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """Out of focus: a Gaussian blur of 1.5-3 pixels."""
  return ndimage.gaussian_filter(sheet, rng.uniform(1.5, 3.0))


def border(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """The paper's edge in view: a dark table beyond one or two sides, the edge
  slightly slanted."""
  out, table = sheet, rng.uniform(0.1, 0.35)
  for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
    out = np.rot90(out, side)  # the side to extend is now the top
    depth = int(rng.uniform(0.1, 0.2) * out.shape[0])
    out = np.pad(out, ((depth, 0), (0, 0)), mode="edge")
    rows, cols = np.indices(out.shape)
    edge = depth * (1.0 - rng.uniform(0.0, 0.5) * cols / out.shape[1])
    out = np.rot90(np.where(rows < edge, table, out), -side)
  return out


def ruled(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  """Ruled notebook lines every 18-32 pixels (1-2 thick), sometimes a margin."""
  out = sheet.copy()
  h, w = sheet.shape
  level, gap, thick = rng.uniform(0.45, 0.65), int(rng.integers(18, 33)), int(rng.integers(1, 3))
  for r in range(int(rng.integers(0, gap)), h, gap):
    out[r:r + thick] = np.minimum(out[r:r + thick], level * sheet[r:r + thick] / 0.9)
  if rng.random() < 0.5:
    c = int(rng.uniform(0.05, 0.2) * w)
    out[:, c:c + thick] = np.minimum(out[:, c:c + thick], level)
  return out


def identity(rng: Rng, sheet: np.ndarray) -> np.ndarray:
  return sheet


def as_png(rng: Rng, grey: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)).save(buffer, "PNG")
  return buffer.getvalue()


def as_jpeg(rng: Rng, grey: np.ndarray) -> bytes:
  """Heavy JPEG compression, quality 15-35."""
  buffer = io.BytesIO()
  Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)).save(
      buffer, "JPEG", quality=int(rng.integers(15, 36)))
  return buffer.getvalue()


def draw(rng: Rng, pixels: np.ndarray, distortion: str) -> bytes:
  """One picture of `pixels` (a 28x28 MNIST digit) with `distortion`."""
  composed = {
      "rotation and scale": lambda: composite(rng, pixels, scale=(0.25, 0.95),
                                              angle=rng.uniform(-15, 15)),
      "light on dark": lambda: composite(rng, pixels, paper=(0.05, 0.3), ink=(0.7, 0.95)),
      "everything": lambda: composite(rng, pixels, angle=rng.uniform(-10, 10)),
  }
  sheet = composed.get(distortion, lambda: composite(rng, pixels))()
  if distortion == "everything":
    for step in (gradient, shadow, ruled, border, blur, noise):
      sheet = step(rng, sheet) if rng.random() < 0.5 else sheet
    return as_jpeg(rng, sheet)
  effect, encode = DISTORTIONS[distortion]
  return encode(rng, effect(rng, sheet))


# name -> (effect on the grey sheet, encoding)
DISTORTIONS: Dict[str, tuple] = {
    "clean": (identity, as_png),
    "illumination gradient": (gradient, as_png),
    "shadow": (shadow, as_png),
    "noise and specks": (noise, as_png),
    "blur": (blur, as_png),
    "rotation and scale": (identity, as_png),
    "paper border": (border, as_png),
    "ruled lines": (ruled, as_png),
    "JPEG": (identity, as_jpeg),
    "light on dark": (identity, as_png),
    "everything": (None, None),
}


def folder_name(distortion: str) -> str:
  return distortion.replace(" ", "_")


def write(out: str, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> None:
  """out/<distortion>/<index>_<label>.<png|jpg>, every distortion of every image."""
  for k, distortion in enumerate(DISTORTIONS):
    folder = os.path.join(out, folder_name(distortion))
    os.makedirs(folder, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels)):
      data = draw(np.random.default_rng([seed, k, i]), pixels, distortion)
      suffix = "jpg" if data[:2] == b"\xff\xd8" else "png"
      with open(os.path.join(folder, f"{i:05d}_{label}.{suffix}"), "wb") as f:
        f.write(data)


def label_of(path: str) -> int:
  return int(os.path.splitext(os.path.basename(path))[0].split("_")[-1])


def score(predict_folder: Callable[[str], List], out: str,
          uncertain_below: float = 0.8) -> Dict[str, Dict]:
  """{distortion: {correct, count, unreadable, uncertain_right, uncertain_wrong}}
  with `predict_folder(folder)` giving `Prediction`s; a picture where no digit
  is found counts as wrong; uncertain: top probability under `uncertain_below`."""
  results = {}
  for distortion in DISTORTIONS:
    predictions = predict_folder(os.path.join(out, folder_name(distortion)))
    read = [p for p in predictions if p.error is None]
    right = [p.top(1)[0][0] == label_of(p.path) for p in read]
    unsure = [p.top(1)[0][1] < uncertain_below for p in read]
    results[distortion] = {
        "correct": int(sum(right)), "count": len(predictions),
        "unreadable": len(predictions) - len(read),
        "uncertain_right": sum(u and r for u, r in zip(unsure, right)),
        "uncertain_wrong": sum(u and not r for u, r in zip(unsure, right))}
  return results


def table(results: Dict[str, Dict], title: Optional[str] = None) -> str:
  """A Markdown table: accuracy per distortion, then overall."""
  keys = ("correct", "count", "unreadable", "uncertain_right", "uncertain_wrong")
  lines = ["| distortion | accuracy | right / pictures | no digit found | "
           "uncertain: right / wrong |", "| --- | ---: | ---: | ---: | ---: |"]
  rows = list(results.items())
  rows.append(("**overall**", {k: sum(r.get(k, 0) for r in results.values())
                               for k in keys}))
  for name, r in rows:
    accuracy = f"{r['correct'] / r['count']:.1%}"
    if name == "**overall**":
      accuracy = f"**{accuracy}**"
    lines.append(f"| {name} | {accuracy} | {r['correct']} / {r['count']} | "
                 f"{r['unreadable']} | {r.get('uncertain_right', 0)} / "
                 f"{r.get('uncertain_wrong', 0)} |")
  return "\n".join(([title, ""] if title else []) + lines)


def save(results: Dict[str, Dict], path: str) -> None:
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
