"""augment.py: geometry against numpy, determinism, range, jit, per-image draws."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import augment


def aug_cfg(**overrides) -> ml_collections.ConfigDict:
  cfg = dict(enabled=True, rotation_deg=0.0, translate_frac=0.0, scale_min=1.0,
             scale_max=1.0, elastic_alpha=0.0, elastic_sigma=4.0)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def images(batch=4, size=28, channels=1, seed=0) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(seed).uniform(
      size=(batch, size, size, channels)).astype(np.float32))


def warp(batch, angle=0.0, shift=(0.0, 0.0), scale=1.0) -> augment.Warp:
  return augment.Warp(jnp.full((batch,), angle, jnp.float32),
                      jnp.tile(jnp.asarray(shift, jnp.float32), (batch, 1)),
                      jnp.full((batch,), scale, jnp.float32))


def roll_with_zeros(x_HxWxC: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """np.roll, with the pixels that wrapped around set to 0."""
  out = np.roll(x_HxWxC, (dy, dx), axis=(0, 1))
  h, w = x_HxWxC.shape[:2]
  rows = slice(0, dy) if dy >= 0 else slice(h + dy, h)
  cols = slice(0, dx) if dx >= 0 else slice(w + dx, w)
  out[rows] = 0
  out[:, cols] = 0
  return out


def test_zero_magnitudes_give_back_the_images():
  x = images(channels=2)
  out = augment.augment_batch(jax.random.key(0), x, aug_cfg())
  np.testing.assert_allclose(out, x, atol=1e-6)


def test_disabled_returns_the_input_untouched():
  x = images()
  cfg = aug_cfg(enabled=False, rotation_deg=30.0, elastic_alpha=8.0)
  assert augment.augment_batch(jax.random.key(0), x, cfg) is x


@pytest.mark.parametrize("dy,dx", [(3, 0), (0, -5), (-2, 4)])
def test_integer_translation_is_a_roll_with_zero_fill(dy, dx):
  x = images(batch=2)
  out = augment.apply_warp(x, warp(2, shift=(dy, dx)))
  for i in range(2):
    np.testing.assert_allclose(out[i], roll_with_zeros(np.asarray(x[i]), dy, dx),
                               atol=1e-6)


@pytest.mark.parametrize("size", [28, 7])
def test_rotation_by_90_degrees_is_rot90(size):
  x = images(batch=2, size=size)
  out = augment.apply_warp(x, warp(2, angle=np.pi / 2))
  expected = np.rot90(np.asarray(x), k=1, axes=(1, 2))
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_zoom_by_two_reads_the_centre_at_half_speed():
  # With zoom 2 about the centre c, output pixel p reads input c + (p - c) / 2.
  x = images(batch=1, size=9)  # centre pixel (4, 4)
  out = augment.apply_warp(x, warp(1, scale=2.0))
  np.testing.assert_allclose(out[0, 4, 4], x[0, 4, 4], atol=1e-6)
  np.testing.assert_allclose(out[0, 6, 8], x[0, 5, 6], atol=1e-6)
  # An odd offset lands half-way between two input pixels: their mean.
  np.testing.assert_allclose(out[0, 4, 5], (x[0, 4, 4] + x[0, 4, 5]) / 2, atol=1e-6)


def test_same_key_same_output_other_key_other_output():
  x = images()
  cfg = aug_cfg(rotation_deg=20.0, translate_frac=0.1, scale_min=0.9,
                scale_max=1.1, elastic_alpha=8.0)
  a = augment.augment_batch(jax.random.key(1), x, cfg)
  b = augment.augment_batch(jax.random.key(1), x, cfg)
  c = augment.augment_batch(jax.random.key(2), x, cfg)
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.1


def test_output_stays_in_unit_range_with_shape_and_dtype():
  x = images(batch=8, channels=3)
  cfg = aug_cfg(rotation_deg=45.0, translate_frac=0.3, scale_min=0.5,
                scale_max=2.0, elastic_alpha=30.0, elastic_sigma=3.0)
  out = augment.augment_batch(jax.random.key(3), x, cfg)
  assert out.shape == x.shape and out.dtype == x.dtype
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_works_under_jit_like_eager():
  x = images()
  cfg = aug_cfg(rotation_deg=20.0, translate_frac=0.2, elastic_alpha=10.0)
  jitted = jax.jit(lambda key, imgs: augment.augment_batch(key, imgs, cfg))
  np.testing.assert_allclose(jitted(jax.random.key(5), x),
                             augment.augment_batch(jax.random.key(5), x, cfg),
                             atol=1e-5)


def test_each_image_gets_its_own_parameters():
  # The same image repeated: identical parameters would give identical copies.
  x = jnp.tile(images(batch=1), (6, 1, 1, 1))
  for cfg in (aug_cfg(rotation_deg=20.0), aug_cfg(translate_frac=0.2),
              aug_cfg(scale_min=0.8, scale_max=1.2), aug_cfg(elastic_alpha=10.0)):
    out = np.asarray(augment.augment_batch(jax.random.key(0), x, cfg))
    diffs = [np.abs(out[0] - out[i]).max() for i in range(1, 6)]
    assert min(diffs) > 1e-3, cfg


def test_elastic_field_is_smooth_and_scaled_by_alpha():
  field = augment.elastic_field(jax.random.key(0), 2, 28, 28, alpha=1.0, sigma=4.0)
  noise_like = augment.elastic_field(jax.random.key(0), 2, 28, 28, 1.0, sigma=0.1)
  # Smoothing averages ~ (4 sigma)^2 neighbours: much smaller and slowly varying.
  assert float(jnp.abs(field).max()) < 0.5 * float(jnp.abs(noise_like).max())
  step = jnp.abs(jnp.diff(field, axis=-1)).mean()
  assert float(step) < 0.2 * float(jnp.abs(jnp.diff(noise_like, axis=-1)).mean())
  doubled = augment.elastic_field(jax.random.key(0), 2, 28, 28, alpha=2.0, sigma=4.0)
  np.testing.assert_allclose(doubled, 2 * field, rtol=1e-6)


def test_gaussian_matrix_rows_sum_to_one_away_from_the_border():
  g = np.asarray(augment.gaussian_matrix(40, 2.0))
  np.testing.assert_allclose(g[20].sum(), 1.0, atol=1e-6)
  assert g[0].sum() < 0.8  # zero padding: the border loses the outside half


@pytest.mark.parametrize("overrides", [dict(rotation_deg=-1.0), dict(scale_min=0.0),
                                       dict(scale_min=1.2, scale_max=1.1),
                                       dict(elastic_sigma=0.0)])
def test_bad_settings_are_rejected(overrides):
  with pytest.raises(UserError, match="config.augment"):
    augment.augment_batch(jax.random.key(0), images(), aug_cfg(**overrides))


def gaussian_blob(centre_yx, size=28, sigma=1.5) -> np.ndarray:
  rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
  return np.exp(-((rows - centre_yx[0]) ** 2 + (cols - centre_yx[1]) ** 2)
                / (2 * sigma ** 2))


def centroids(images_BxHxWx1) -> np.ndarray:
  """(B, 2): each image's intensity-weighted (row, column)."""
  x = np.asarray(images_BxHxWx1, np.float64)[..., 0]
  rows, cols = np.mgrid[0:x.shape[1], 0:x.shape[2]]
  mass = x.sum((1, 2))
  return np.stack([(x * rows).sum((1, 2)) / mass, (x * cols).sum((1, 2)) / mass], 1)


def augmented_copies(image_HxW, cfg, n=256):
  batch = jnp.tile(jnp.asarray(image_HxW, jnp.float32)[None, ..., None], (n, 1, 1, 1))
  return augment.augment_batch(jax.random.key(0), batch, cfg)


def test_rotation_deg_is_the_range_of_angles_in_degrees():
  # A blob 8 pixels above the centre (13.5, 13.5): its centroid's angle about
  # the centre, measured counter-clockwise as displayed, is the rotation.
  centre = 13.5
  found = centroids(augmented_copies(gaussian_blob((centre - 8, centre)),
                                     aug_cfg(rotation_deg=30.0)))
  up, right = centre - found[:, 0], found[:, 1] - centre
  degrees = np.degrees(np.arctan2(up, right)) - 90.0
  np.testing.assert_allclose(np.hypot(up, right), 8.0, atol=0.2)  # turned, not moved
  assert np.abs(degrees).max() <= 31.0  # within [-30, 30], 1 degree for sampling
  # Uniform draws: 256 of them reach near both ends (P(none above 26) < 1e-7).
  assert degrees.max() > 26.0 and degrees.min() < -26.0
  assert abs(degrees.mean()) < 4.0  # ~3 standard errors of the mean


def test_translate_frac_is_the_range_of_shifts_as_a_fraction_of_the_size():
  # translate_frac 0.1 of 28 pixels: shifts up to 2.8 pixels along each axis.
  centre = 13.5
  found = centroids(augmented_copies(gaussian_blob((centre, centre)),
                                     aug_cfg(translate_frac=0.1)))
  shifts = found - centre
  assert np.abs(shifts).max() <= 2.8 + 0.05
  for axis in (0, 1):  # each axis drawn on its own, over the whole range
    assert shifts[:, axis].max() > 2.4 and shifts[:, axis].min() < -2.4
  assert abs(np.corrcoef(shifts.T)[0, 1]) < 0.25
