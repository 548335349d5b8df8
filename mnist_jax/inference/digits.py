"""A user's photo or scan of a digit -> a 28x28 MNIST-style array, in short steps.

MNIST digits are light strokes on black, their bounding box scaled so the
longer side is 20 pixels (aspect kept), placed in a 28x28 frame with the
centre of mass at the centre. A photo of a digit on paper differs in every
way: dark ink on light paper, uneven light and shadows, the paper's edge and
ruled lines in view, noise and specks, any size anywhere. `trace` undoes each
difference in turn and keeps every step (`predict --figure` draws them):

  read_image (EXIF orientation applied) -> to_grey -> shrink -> smooth
  -> ink_contrast: the paper's light estimated at a large scale (a grey
     opening) and divided out, in the polarity whose ink stands out
  -> ink_mask: Otsu's threshold, with hysteresis; long thin straight runs
     (ruled lines, the paper's edge) removed
  -> keep_digit: the ink components that make up the digit; borders, lines
     and specks dropped
  -> crop, thicken strokes too thin for 20 pixels, deskew by moments
     (LeCun et al.'s deslanting) -> fit_box -> centre_by_mass

Arrays are float32 in [0, 1] (1 = ink) until `to_uint8`, which gives the bytes
the model was trained on. scikit-image and scipy.ndimage do the image steps.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Dict

import numpy as np
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from scipy import ndimage
from skimage import filters, measure, morphology

from mnist_jax.core.errors import UserError

SIZE = 28  # side of an MNIST image
BOX = 20  # the longer side of the digit inside it
WORK_SIDE = 512  # larger pictures are shrunk to this first: a digit needs no more
MIN_STROKE = 2.0  # thinner strokes (pixels in the 20-pixel box) are thickened:
# MNIST's are 1.9-4.6 pixels wide (5th-95th percentile of its test digits)
MIN_PAPER = 0.2  # the dimmest paper light the ink is divided by (noise otherwise)
PAPER_PERCENTILE = 20  # of the pixels around each: paper (ink covers less)
LINE_SPAN = 0.35  # a straight run this long (fraction of the side) is a line ...
LINE_WIDTH = 0.03  # ... if it is at most this thick (fraction of the other side)
LINE_GAP = 0.05  # gaps this long (fraction of the side) in a line are bridged
BORDER_CONTACT = 0.2  # ink on this much of a side of the frame is a border, ...
BORDER_SPAN = 0.8  # ... and so is ink spanning this much of the width or height
MIN_DIGIT = 0.1  # a digit is at least this size (fraction of the shorter side)
NEAR = 0.25  # parts of the digit lie within this (x its size) of its largest part


@dataclasses.dataclass(frozen=True)
class Settings:
  """How a picture is read; each field is a `predict` flag of the same name."""
  background_scale: float = 0.3  # the paper's light: a window this x the shorter side
  min_contrast: float = 0.15  # ink differs from its paper by at least this fraction
  min_part: float = 0.1  # smaller pieces (x the largest piece's area) are specks
  deskew: bool = True  # shear the digit upright by its second moments

  def check(self) -> "Settings":
    for name in ("background_scale", "min_contrast", "min_part"):
      value = getattr(self, name)
      if not 0.0 < value < 1.0:
        raise UserError(f"--{name} {value}: use a number between 0 and 1 "
                        f"(default {getattr(Settings, name)}).")
    return self


def read_image(path: str) -> Image.Image:
  """Opens an image file (its first frame for an animated GIF), fully decoded,
  turned upright as its EXIF orientation says (a phone's sideways photo)."""
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
        return ImageOps.exif_transpose(first)  # a copy, upright
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


def resize(x_HxW: np.ndarray, height: int, width: int,
           resample=Image.Resampling.LANCZOS) -> np.ndarray:
  """A float image resized with Pillow (antialiased when shrinking)."""
  out = Image.fromarray(x_HxW.astype(np.float32)).resize((width, height), resample)
  return np.asarray(out, np.float32)


def shrink(grey_HxW: np.ndarray, side: int = WORK_SIDE) -> np.ndarray:
  """At most `side` pixels on the longer side (averaged down: less noise)."""
  h, w = grey_HxW.shape
  scale = side / max(h, w)
  if scale >= 1.0:
    return grey_HxW
  return resize(grey_HxW, max(1, round(h * scale)), max(1, round(w * scale)),
                Image.Resampling.BOX)


def smooth(grey_HxW: np.ndarray) -> np.ndarray:
  """A light blur against sensor noise, about 1 pixel in 150 of the shorter side."""
  sigma = min(grey_HxW.shape) / 150
  return ndimage.gaussian_filter(grey_HxW, sigma) if sigma >= 0.3 else grey_HxW


def window(shape, scale: float) -> int:
  return max(3, round(scale * min(shape)))


def ink_is_dark(grey_HxW: np.ndarray, scale: float) -> bool:
  """Whether the ink is darker than the paper: ink is the minority of pixels,
  so against a blurred picture (the light, roughly) the paper lies near the
  median and the ink strays furthest from it, to one side."""
  small = shrink(grey_HxW, 64)
  light = ndimage.gaussian_filter(small, scale * min(small.shape) / 2)
  residual = grey_HxW - resize(light, *grey_HxW.shape, Image.Resampling.BILINEAR)
  low, median, high = np.percentile(residual, [0.5, 50, 99.5])
  return median - low > high - median


def paper_light(x_HxW: np.ndarray, scale: float) -> np.ndarray:
  """The light-ink picture's background: where either of two estimates is
  higher. A grey opening (of the picture smoothed first: its minimum would
  follow the noise's troughs) removes every stroke narrower than the window and
  keeps gradients and large regions, such as a table beside the paper, to the
  pixel; the 20th percentile around each pixel (on a 64-pixel copy) also takes
  in a shadow's corners, narrower than the window but larger than strokes."""
  size = window(x_HxW.shape, scale)
  opened = ndimage.grey_opening(ndimage.gaussian_filter(x_HxW, size / 16), size=size)
  small = shrink(x_HxW, 64)
  low = ndimage.percentile_filter(small, PAPER_PERCENTILE, size=window(small.shape, scale))
  return np.maximum(opened, resize(low, *x_HxW.shape, Image.Resampling.BILINEAR))


def ink_contrast(grey_HxW: np.ndarray, scale: float) -> np.ndarray:
  """Ink as a fraction of its paper's light, 0 (paper) to 1 (black ink):
  dividing by the paper's light evens gradients and shadows."""
  x = 1.0 - grey_HxW if ink_is_dark(grey_HxW, scale) else grey_HxW
  background = paper_light(x, scale)
  return np.clip((x - background) / np.maximum(1.0 - background, MIN_PAPER), 0.0, 1.0)


def ink_mask(ink_HxW: np.ndarray, settings: Settings) -> np.ndarray:
  """Ink pixels: above Otsu's threshold (never below min_contrast), grown into
  connected fainter pixels above half of it (hysteresis: whole strokes)."""
  if np.percentile(ink_HxW, 99.9) < settings.min_contrast:
    raise UserError(f"no digit found: no ink differs from the paper by "
                    f"{settings.min_contrast:.0%} (the image is blank); pass an image "
                    "with a digit on plain paper, or lower --min_contrast.")
  high = max(filters.threshold_otsu(ink_HxW), settings.min_contrast)
  return filters.apply_hysteresis_threshold(ink_HxW, high / 2, high)


def straight_lines(mask_HxW: np.ndarray, axis: int) -> np.ndarray:
  """Ink in runs along `axis` (1: horizontal, 0: vertical) at least LINE_SPAN
  of the picture long, where the ink is at most LINE_WIDTH of the picture
  thick across them: ruled lines and the paper's edge, not the strokes (nor
  where a stroke crosses a line: the ink is thick there)."""
  along, bridge, across = [1, 1], [1, 1], [1, 1]
  along[axis] = round(LINE_SPAN * mask_HxW.shape[axis])
  bridge[axis] = round(LINE_GAP * mask_HxW.shape[axis]) + 1
  across[1 - axis] = round(LINE_WIDTH * mask_HxW.shape[1 - axis]) + 1
  # A faint line is found in pieces: its gaps are bridged before it is measured.
  bridged = ndimage.binary_closing(mask_HxW, np.ones(bridge, bool))
  runs = ndimage.binary_opening(bridged, np.ones(along, bool))
  thin = mask_HxW & ~ndimage.binary_opening(mask_HxW, np.ones(across, bool))
  # Followed along its direction into the pieces too short to count alone.
  return ndimage.binary_dilation(runs & thin, np.ones(along, bool)) & thin


def drop_lines(mask_HxW: np.ndarray) -> np.ndarray:
  """The mask without straight lines."""
  return mask_HxW & ~straight_lines(mask_HxW, 1) & ~straight_lines(mask_HxW, 0)


def border_contact(labels_HxW: np.ndarray, count: int) -> np.ndarray:
  """For each label 0..count, how many of its pixels lie on the picture's edge."""
  edge = np.concatenate([labels_HxW[0], labels_HxW[-1], labels_HxW[:, 0],
                         labels_HxW[:, -1]])
  return np.bincount(edge, minlength=count + 1)


def border_like(labels_HxW: np.ndarray, parts) -> Dict[int, bool]:
  """For each component's label, whether it lies along the picture's edge or
  spans it, as a paper border, a table or a shadow's edge does."""
  contact = border_contact(labels_HxW, len(parts))
  h, w = labels_HxW.shape
  return {p.label: bool(contact[p.label] >= BORDER_CONTACT * min(h, w)
                        or p.bbox[2] - p.bbox[0] >= BORDER_SPAN * h
                        or p.bbox[3] - p.bbox[1] >= BORDER_SPAN * w) for p in parts}


def keep_digit(mask_HxW: np.ndarray, settings: Settings) -> np.ndarray:
  """The components that make up the digit.

  Its largest part is the largest component that is not border-like and at
  least MIN_DIGIT of the picture in size, else the largest of all (a digit
  cropped tightly is border-like). Other parts are kept when they are no specks (at
  least min_part of its area and a quarter of its size long), lie near it, and
  cling to the edge only if the largest part does.
  """
  labels = measure.label(mask_HxW)
  parts = measure.regionprops(labels)
  if not parts:
    raise UserError("no digit found: no ink stands out from the paper; pass an "
                    "image with a digit on plain paper, or lower --min_contrast.")
  clings = border_like(labels, parts)
  inner = [p for p in parts if not clings[p.label]
           and extent(p.bbox) >= MIN_DIGIT * min(mask_HxW.shape)]
  main = max(inner or parts, key=lambda p: p.area)
  size = extent(main.bbox)
  kept = [p.label for p in parts if p is main or (
      p.area >= settings.min_part * main.area and p.axis_major_length >= size / 4
      and near(p.bbox, main.bbox) and (clings[main.label] or not clings[p.label]))]
  return np.isin(labels, kept)


def extent(box) -> int:
  """The longer side of a (top, left, bottom, right) box."""
  return max(box[2] - box[0], box[3] - box[1])


def near(box, main_box) -> bool:
  """Whether `box` overlaps `main_box` grown by NEAR times its longer side."""
  r0, c0, r1, c1 = main_box
  margin = NEAR * max(r1 - r0, c1 - c0)
  return (box[0] < r1 + margin and box[2] > r0 - margin and
          box[1] < c1 + margin and box[3] > c0 - margin)


def digit_ink(ink_HxW: np.ndarray, mask_HxW: np.ndarray,
              digit_HxW: np.ndarray) -> np.ndarray:
  """The digit's ink (with the fainter edges of its strokes; other ink, lines
  and paper zero), cropped to it and stretched so its strokes' core is 1."""
  grown = ndimage.binary_dilation(digit_HxW, iterations=2) & (digit_HxW | ~mask_HxW)
  rows, cols = np.flatnonzero(digit_HxW.any(1)), np.flatnonzero(digit_HxW.any(0))
  box = (slice(max(rows[0] - 2, 0), rows[-1] + 3), slice(max(cols[0] - 2, 0), cols[-1] + 3))
  ink = np.where(grown, ink_HxW, 0.0)[box]
  core = np.percentile(ink_HxW[digit_HxW], 90)
  return np.clip(ink / max(core, 1e-6), 0.0, 1.0).astype(np.float32)


def stroke_width(ink_HxW: np.ndarray) -> float:
  """Mean stroke width in pixels: ink area over the length of its skeleton."""
  mask = ink_HxW > 0.5
  return mask.sum() / max(morphology.skeletonize(mask).sum(), 1)


def thicken(ink_HxW: np.ndarray, box: int = BOX) -> np.ndarray:
  """Strokes that would be thinner than MIN_STROKE in the `box` widened to it
  (a fine pen on a large sheet would otherwise fade when shrunk)."""
  target = MIN_STROKE * max(ink_HxW.shape) / box
  radius = round((target - stroke_width(ink_HxW)) / 2)
  if radius < 1:
    return ink_HxW
  padded = np.pad(ink_HxW, radius)
  return ndimage.grey_dilation(padded, footprint=morphology.disk(radius))


def deskew(ink_HxW: np.ndarray) -> np.ndarray:
  """Sheared along rows so the ink's principal axis is vertical: the shear that
  makes the mixed second moment zero, as LeCun et al. deslanted MNIST."""
  mu = measure.moments_central(ink_HxW, order=2)
  slant = float(np.clip(mu[1, 1] / max(mu[2, 0], 1e-6), -1.0, 1.0))
  h, _ = ink_HxW.shape
  pad = int(np.ceil(abs(slant) * h / 2)) + 1
  padded = np.pad(ink_HxW, ((0, 0), (pad, pad)))
  row_centre = float(np.sum(np.arange(h)[:, None] * ink_HxW) / ink_HxW.sum())
  # Output (r, c) reads input (r, c + slant * (r - row_centre)).
  sheared = ndimage.affine_transform(padded, [[1.0, 0.0], [slant, 1.0]],
                                     offset=[0.0, -slant * row_centre], order=1)
  return crop(sheared)


def crop(x_HxW: np.ndarray, floor: float = 0.05) -> np.ndarray:
  """The smallest rectangle holding every pixel above `floor`."""
  rows = np.flatnonzero((x_HxW > floor).any(axis=1))
  cols = np.flatnonzero((x_HxW > floor).any(axis=0))
  return x_HxW[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def fit_box(x_HxW: np.ndarray, box: int = BOX) -> np.ndarray:
  """Resizes so the longer side is `box` pixels, keeping the aspect ratio."""
  h, w = x_HxW.shape
  scale = box / max(h, w)
  resized = resize(x_HxW, max(1, round(h * scale)), max(1, round(w * scale)))
  return np.clip(resized, 0.0, 1.0)  # Lanczos: antialiased, like MNIST's strokes


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


def trace(grey_HxW: np.ndarray, settings: Settings = Settings()) -> Dict[str, np.ndarray]:
  """Every step from a grey picture to the 28x28 input, by name, in order;
  the last ("network input") is what the model sees."""
  steps = {"picture": grey_HxW}
  work = smooth(shrink(grey_HxW))
  steps["ink (light evened)"] = ink = ink_contrast(work, settings.background_scale)
  mask = ink_mask(ink, settings)
  digit = keep_digit(drop_lines(mask), settings)
  steps["ink found (kept white)"] = np.where(digit, 1.0, 0.35 * mask)
  ink = thicken(digit_ink(ink, mask, digit))
  steps["digit (upright)"] = upright = deskew(ink) if settings.deskew else crop(ink)
  steps["network input"] = centre_by_mass(fit_box(upright))
  return steps


def to_mnist(grey_HxW: np.ndarray, settings: Settings = Settings()) -> np.ndarray:
  """Any grey digit picture -> a 28x28 MNIST-style float array."""
  return trace(grey_HxW, settings)["network input"]


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


def load_steps(path: str, preprocess: bool = True,
               settings: Settings = Settings()) -> Dict[str, np.ndarray]:
  """An image file -> its steps (`trace`), the last as (28, 28, 1) uint8 ready
  for the model; UserError naming the file if it is bad or holds no digit."""
  grey = to_grey(read_image(path))
  try:
    steps = trace(grey, settings) if preprocess else {
        "picture": grey, "network input": as_is(grey, path)}
  except UserError as e:
    message = str(e)
    raise UserError(message if message.startswith(path) else f"{path}: {message}") from None
  steps["network input"] = to_uint8(steps["network input"])
  return steps


def load_digit(path: str, preprocess: bool = True,
               settings: Settings = Settings()) -> np.ndarray:
  """An image file -> (28, 28, 1) uint8, ready for the model; UserError if bad."""
  return load_steps(path, preprocess, settings)["network input"]
