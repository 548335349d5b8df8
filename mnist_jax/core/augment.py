"""On-device data augmentation: random affine warps and elastic distortions.

`augment_batch(rng, images_BxHxWxC, cfg)` draws, per image, a rotation, a
translation and a zoom, composes them into one sampling grid, optionally adds
an elastic displacement field (Simard, Steinkraus and Platt 2003), and samples
the image there bilinearly with zero fill. Everything is jax.numpy, so it runs
inside the jitted train step on the device; it is pure and seeded by `rng`.

Geometry (rows y down, columns x right, centre c = ((H-1)/2, (W-1)/2)): the
output pixel p takes the input value at

  source(p) = c + R(-angle) (p - c - shift) / scale + alpha * d(p)

so the content is zoomed by `scale`, rotated by `angle` (counter-clockwise
as displayed, like np.rot90) and moved by `shift` pixels (like np.roll), and
d is the smoothed random displacement field. Sampling the input at a source
position (the inverse map) leaves no holes in the output.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy import ndimage

from mnist_jax.core.config import validate_augment


@dataclasses.dataclass(frozen=True)
class Warp:
  """Per-image transform parameters; all arrays have a leading batch axis B."""

  angle_B: jax.Array  # radians, counter-clockwise as displayed
  shift_Bx2: jax.Array  # (dy, dx) in pixels
  scale_B: jax.Array  # zoom factor, > 1 enlarges
  displacement_Bx2xHxW: jax.Array | None = None  # elastic field, in pixels


def gaussian_matrix(size: int, sigma: float) -> jax.Array:
  """SxS matrix whose product with a vector is a 1-D Gaussian blur, zero-padded.

  The kernel is truncated at 4 sigma and normalised to sum to 1, as
  scipy.ndimage.gaussian_filter does; as a matrix, blurring a 28x28 field
  is two tiny matmuls instead of a convolution.
  """
  radius = int(4.0 * sigma + 0.5)
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  norm = jnp.sum(jnp.exp(-0.5 * (offsets / sigma) ** 2))
  i = jnp.arange(size, dtype=jnp.float32)
  dist = i[:, None] - i[None, :]
  weights = jnp.exp(-0.5 * (dist / sigma) ** 2) / norm
  return jnp.where(jnp.abs(dist) <= radius, weights, 0.0)


def elastic_field(rng: jax.Array, batch: int, height: int, width: int,
                  alpha: float, sigma: float) -> jax.Array:
  """Simard et al.'s displacement: uniform [-1, 1] noise, Gaussian-smoothed, times alpha."""
  noise_Bx2xHxW = jax.random.uniform(rng, (batch, 2, height, width),
                                     minval=-1.0, maxval=1.0)
  g_h, g_w = gaussian_matrix(height, sigma), gaussian_matrix(width, sigma)
  smooth = jnp.einsum("ij,bdjk,lk->bdil", g_h, noise_Bx2xHxW, g_w)
  return alpha * smooth


def sample_warp(rng: jax.Array, batch: int, height: int, width: int,
                cfg: ml_collections.ConfigDict) -> Warp:
  """Independent uniform parameters for each of `batch` images."""
  k_angle, k_shift, k_scale, k_elastic = jax.random.split(rng, 4)
  max_angle = math.radians(cfg.rotation_deg)
  angle = jax.random.uniform(k_angle, (batch,), minval=-max_angle, maxval=max_angle)
  unit = jax.random.uniform(k_shift, (batch, 2), minval=-1.0, maxval=1.0)
  shift = unit * cfg.translate_frac * jnp.array([height, width], jnp.float32)
  scale = jax.random.uniform(k_scale, (batch,), minval=cfg.scale_min,
                             maxval=cfg.scale_max)
  field = None
  if cfg.elastic_alpha > 0:
    field = elastic_field(k_elastic, batch, height, width, cfg.elastic_alpha,
                          cfg.elastic_sigma)
  return Warp(angle, shift, scale, field)


def source_coordinates(warp: Warp, height: int, width: int) -> jax.Array:
  """Bx2xHxW: where in the input each output pixel (row, column) is read from."""
  cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing="ij")
  y = (rows[None] - cy - warp.shift_Bx2[:, 0, None, None]) / warp.scale_B[:, None, None]
  x = (cols[None] - cx - warp.shift_Bx2[:, 1, None, None]) / warp.scale_B[:, None, None]
  cos, sin = jnp.cos(warp.angle_B)[:, None, None], jnp.sin(warp.angle_B)[:, None, None]
  coords = jnp.stack([cy + cos * y + sin * x, cx - sin * y + cos * x], axis=1)
  if warp.displacement_Bx2xHxW is not None:
    coords = coords + warp.displacement_Bx2xHxW
  return coords


def _sample_image(image_HxWxC: jax.Array, coords_2xHxW: jax.Array) -> jax.Array:
  """Bilinear read of every channel at the coordinates; outside the image is 0."""
  def channel(plane_HxW):
    return ndimage.map_coordinates(plane_HxW, [coords_2xHxW[0], coords_2xHxW[1]],
                                   order=1, mode="constant", cval=0.0)
  return jax.vmap(channel, in_axes=2, out_axes=2)(image_HxWxC)


def apply_warp(images_BxHxWxC: jax.Array, warp: Warp) -> jax.Array:
  """The images resampled under `warp`; values stay in the input's range."""
  _, h, w, _ = images_BxHxWxC.shape
  coords_Bx2xHxW = source_coordinates(warp, h, w)
  out = jax.vmap(_sample_image)(images_BxHxWxC, coords_Bx2xHxW)
  # Bilinear weights sum to 1, so only rounding could step outside [0, 1].
  return jnp.clip(out, 0.0, 1.0).astype(images_BxHxWxC.dtype)


def augment_batch(rng: jax.Array, images_BxHxWxC: jax.Array,
                  cfg: ml_collections.ConfigDict) -> jax.Array:
  """Randomly warped copies of float images in [0, 1]; unchanged when disabled.

  `cfg` is `config.augment`; its values are read while tracing, so under jit
  they are constants and a change of config recompiles.
  """
  if not cfg.enabled:
    return images_BxHxWxC
  validate_augment(cfg)  # config.validate does this too; direct callers need it
  b, h, w, _ = images_BxHxWxC.shape
  return apply_warp(images_BxHxWxC, sample_warp(rng, b, h, w, cfg))
