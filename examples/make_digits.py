r"""Draws the example digits in examples/digits/: pen strokes, not MNIST images.

  python examples/make_digits.py

Each digit is a few strokes (lines and arcs in a unit square) drawn with
Pillow's ImageDraw in dark ink on white paper, on canvases of different sizes
and shapes, off-centre, so that `python -m mnist_jax predict` has to invert,
crop, scale and centre them like MNIST's own preprocessing did.
"""

from __future__ import annotations

import math
import os
from typing import List, Sequence, Tuple

from PIL import Image, ImageDraw

Point = Tuple[float, float]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits")
SUPERSAMPLE = 4  # draw large, then shrink: antialiased edges like a scan


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
        n: int = 40) -> List[Point]:
  """Points along an ellipse from `start` to `end` degrees (0 = right, 90 = down)."""
  return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
          for a in (start + (end - start) * i / n for i in range(n + 1))]


# Each digit: a list of strokes, each a polyline in the unit square (y down).
STROKES = {
    0: [arc(0.5, 0.5, 0.3, 0.42, 0, 360)],
    1: [[(0.32, 0.25), (0.55, 0.08), (0.55, 0.92)]],
    2: [arc(0.5, 0.3, 0.28, 0.22, 190, 380) + [(0.2, 0.9), (0.82, 0.9)]],
    3: [arc(0.48, 0.29, 0.27, 0.2, 200, 450) + arc(0.48, 0.7, 0.3, 0.22, 270, 500)],
    4: [[(0.62, 0.08), (0.18, 0.64), (0.85, 0.64)], [(0.64, 0.35), (0.64, 0.93)]],
    5: [[(0.78, 0.1), (0.32, 0.1), (0.29, 0.45)] + arc(0.48, 0.65, 0.3, 0.26, 230, 505)],
    6: [[(0.68, 0.08)] + arc(0.5, 0.68, 0.28, 0.25, 200, 560)],
    7: [[(0.18, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    8: [arc(0.5, 0.28, 0.22, 0.19, 0, 360), arc(0.5, 0.7, 0.28, 0.22, 0, 360)],
    9: [arc(0.48, 0.32, 0.26, 0.22, 0, 360), [(0.74, 0.3), (0.7, 0.92)]],
}

# (digit, canvas width, height, digit box (left, top, width, height) in pixels)
SHEETS = [
    (0, 64, 64, (10, 6, 40, 54)),
    (1, 200, 120, (20, 30, 60, 80)),
    (2, 96, 128, (20, 40, 50, 70)),
    (3, 300, 300, (120, 40, 140, 220)),
    (4, 50, 80, (4, 10, 40, 60)),
    (5, 160, 90, (70, 8, 50, 75)),
    (6, 128, 128, (30, 20, 70, 96)),
    (7, 240, 160, (100, 20, 90, 120)),
    (8, 72, 100, (16, 8, 40, 84)),
    (9, 400, 260, (40, 30, 130, 200)),
]


def draw_digit(digit: int, width: int, height: int,
               box: Tuple[int, int, int, int]) -> Image.Image:
  """One digit in dark ink on white, its strokes fitted into `box`."""
  s = SUPERSAMPLE
  left, top, w, h = box
  image = Image.new("L", (width * s, height * s), 255)
  pen = ImageDraw.Draw(image)
  stroke = max(2, round(0.11 * min(w, h) * s))
  for line in STROKES[digit]:
    points = [((left + x * w) * s, (top + y * h) * s) for x, y in line]
    pen.line(points, fill=20, width=stroke, joint="curve")
    for x, y in (points[0], points[-1]):  # round pen tips
      pen.ellipse([x - stroke / 2, y - stroke / 2, x + stroke / 2, y + stroke / 2],
                  fill=20)
  return image.resize((width, height), Image.Resampling.LANCZOS)


def main(sheets: Sequence = SHEETS) -> None:
  os.makedirs(OUT, exist_ok=True)
  for digit, width, height, box in sheets:
    path = os.path.join(OUT, f"digit{digit}_{width}x{height}.png")
    draw_digit(digit, width, height, box).save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
  main()
