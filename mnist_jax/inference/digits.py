"""A user's digit image -> a 28x28 MNIST-style array, in short pure steps.

MNIST digits are light strokes on a black background, their bounding box scaled
so the longer side is 20 pixels (aspect kept), placed in a 28x28 frame with the
centre of mass at the centre. A photo or scan of a digit on paper is the
opposite polarity, any size and anywhere in the picture; `to_mnist` undoes
each difference in turn:

  read_image -> to_grey -> light_on_dark -> crop_to_digit -> fit_box -> centre_by_mass

Arrays are float32 in [0, 1] (1 = ink) until `to_uint8`, which gives the bytes
the model was trained on.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from mnist_jax.core.errors import UserError

SIZE = 28  # side of an MNIST image
BOX = 20  # the longer side of the digit inside it
INK_THRESHOLD = 0.1  # a pixel darker than this (after normalising) is background
MIN_CONTRAST = 0.05  # less than this between background and ink: no digit


def read_image(path: str) -> Image.Image:
  """Opens an image file (its first frame for an animated GIF), fully decoded."""
  if not os.path.exists(path):
    raise UserError(f"{path}: no such file; check the path.")
  if os.path.getsize(path) == 0:
    raise UserError(f"{path}: the file is empty; pass a PNG, JPEG, BMP or GIF image.")
  try:
    with warnings.catch_warnings():
      # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a digit
      # picture is never that large, and decoding one can take gigabytes.
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as image:
        first = next(ImageSequence.Iterator(image))
        first.load()  # decode now, while the file is open: truncation shows here
        return first.copy()
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise UserError(f"{path}: too large to decode safely ({' '.join(str(e).split())}); "
                    f"pass an image of at most {Image.MAX_IMAGE_PIXELS:,} pixels.") from None
  except UnidentifiedImageError:
    raise UserError(f"{path}: not an image Pillow can read; pass a PNG, JPEG, "
                    "BMP or GIF image.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"{path}: unreadable image ({' '.join(str(e).split())}); "
                    "check the file is complete and readable.") from None


def to_grey(image: Image.Image) -> np.ndarray:
  """Luminance in [0, 1], HxW; transparency is composited onto a background.

  The background is chosen to contrast with the ink: a digit drawn in black on
  a transparent canvas goes onto white, one drawn in white onto black.
  """
  if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
    rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    alpha = rgba[..., 3]
    ink_is_light = np.sum(grey * alpha) > 0.5 * max(np.sum(alpha), 1e-6)
    background = 0.0 if ink_is_light else 1.0
    return grey * alpha + background * (1.0 - alpha)
  if image.mode.startswith("I") or image.mode == "F":
    # 16-bit greys (and int/float modes): Pillow's convert("L") would clip them.
    x = np.asarray(image, np.float32)
    full = 65535.0 if image.mode.startswith("I;16") or x.max() > 255 else 255.0
    return np.clip(x / full, 0.0, 1.0)
  return np.asarray(image.convert("L"), np.float32) / 255.0


def border_level(grey_HxW: np.ndarray) -> float:
  """The median of the outermost pixels: the paper's (or screen's) level."""
  edges = np.concatenate([grey_HxW[0], grey_HxW[-1], grey_HxW[:, 0], grey_HxW[:, -1]])
  return float(np.median(edges))


def light_on_dark(grey_HxW: np.ndarray) -> np.ndarray:
  """Inverts dark-on-light, then stretches background -> 0 and the ink -> 1."""
  x = 1.0 - grey_HxW if border_level(grey_HxW) > 0.5 else grey_HxW
  background, ink = border_level(x), float(x.max())
  if ink - background < MIN_CONTRAST:
    raise UserError("no digit found: the image is blank (one flat colour); "
                    "pass an image with a digit on a plain background.")
  return np.clip((x - background) / (ink - background), 0.0, 1.0)


def crop_to_digit(x_HxW: np.ndarray) -> np.ndarray:
  """The smallest rectangle holding every ink pixel."""
  rows = np.flatnonzero((x_HxW > INK_THRESHOLD).any(axis=1))
  cols = np.flatnonzero((x_HxW > INK_THRESHOLD).any(axis=0))
  return x_HxW[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def fit_box(x_HxW: np.ndarray, box: int = BOX) -> np.ndarray:
  """Resizes so the longer side is `box` pixels, keeping the aspect ratio."""
  h, w = x_HxW.shape
  scale = box / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (w, h)
  resized = Image.fromarray(x_HxW.astype(np.float32)).resize(
      size, Image.Resampling.LANCZOS)  # antialiased, like MNIST's own strokes
  return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def centre_of_mass(x_HxW: np.ndarray):
  """(row, col) of the ink's centre of mass, in pixel-index coordinates."""
  total = x_HxW.sum()
  rows, cols = np.indices(x_HxW.shape)
  return float((rows * x_HxW).sum() / total), float((cols * x_HxW).sum() / total)


def centre_by_mass(x_HxW: np.ndarray, size: int = SIZE) -> np.ndarray:
  """Places the digit in a `size`x`size` frame with its mass at the centre."""
  h, w = x_HxW.shape
  com_r, com_c = centre_of_mass(x_HxW)
  centre = (size - 1) / 2.0
  top = int(np.clip(round(centre - com_r), 0, size - h))
  left = int(np.clip(round(centre - com_c), 0, size - w))
  out = np.zeros((size, size), np.float32)
  out[top:top + h, left:left + w] = x_HxW
  return out


def to_mnist(grey_HxW: np.ndarray) -> np.ndarray:
  """Any grey digit picture -> a 28x28 MNIST-style float array."""
  return centre_by_mass(fit_box(crop_to_digit(light_on_dark(grey_HxW))))


def as_is(grey_HxW: np.ndarray, path: str = "image") -> np.ndarray:
  """An image already in MNIST form (28x28, light on dark), unchanged."""
  if grey_HxW.shape != (SIZE, SIZE):
    h, w = grey_HxW.shape
    raise UserError(f"{path}: is {w}x{h}, not {SIZE}x{SIZE}; drop --no-preprocess "
                    "to have it cropped, scaled and centred.")
  return grey_HxW


def to_uint8(x_HxW: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> the (28, 28, 1) uint8 bytes the model was trained on."""
  return np.round(np.clip(x_HxW, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None]


def load_digit(path: str, preprocess: bool = True) -> np.ndarray:
  """An image file -> (28, 28, 1) uint8, ready for the model; UserError if bad."""
  grey = to_grey(read_image(path))
  try:
    return to_uint8(to_mnist(grey) if preprocess else as_is(grey, path))
  except UserError as e:
    message = str(e)
    raise UserError(message if message.startswith(path) else f"{path}: {message}") from None
