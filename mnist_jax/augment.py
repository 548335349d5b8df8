"""STAND-IN, to be replaced at merge by engineer 7a's mnist_jax/augment.py.

It implements only the interface contract's signature and integer-pixel
random translation (`cfg.translate_frac`), with zero fill, so that the
training side (config.augment, the jitted step) can be built and tested
before the real module (rotation, scale, elastic distortion, bilinear
sampling) exists. The other fields of `cfg` are ignored here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections


def _shift(image_HxWxC: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
  """The image moved by (dy, dx) whole pixels; uncovered pixels are 0."""
  h, w = image_HxWxC.shape[:2]
  ys = jnp.arange(h) - dy
  xs = jnp.arange(w) - dx
  inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
  moved = image_HxWxC[jnp.clip(ys, 0, h - 1)][:, jnp.clip(xs, 0, w - 1)]
  return jnp.where(inside[..., None], moved, 0.0)


def augment_batch(rng: jax.Array, images_BxHxWxC: jax.Array,
                  cfg: ml_collections.ConfigDict) -> jax.Array:
  """Each image shifted by its own random whole-pixel offset in [-t, t] * size."""
  b, h, w = images_BxHxWxC.shape[:3]
  max_dy = int(cfg.translate_frac * h)
  max_dx = int(cfg.translate_frac * w)
  key_y, key_x = jax.random.split(rng)
  dy = jax.random.randint(key_y, (b,), -max_dy, max_dy + 1)
  dx = jax.random.randint(key_x, (b,), -max_dx, max_dx + 1)
  return jax.vmap(_shift)(images_BxHxWxC, dy, dx).astype(images_BxHxWxC.dtype)
