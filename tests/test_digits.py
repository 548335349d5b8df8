"""MNIST-style preprocessing of a user's image, on synthetic digits (no model)."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from skimage import measure

from mnist_jax import UserError
from mnist_jax.inference import digits, photo_benchmark


def paper_digit(width=120, height=90, box=(70, 10, 30, 60), ink=30, paper=235):
  """A '7'-like shape in dark ink on light paper, off-centre, as float [0, 1]."""
  image = Image.new("L", (width, height), paper)
  left, top, w, h = box
  pen = ImageDraw.Draw(image)
  pen.line([(left, top), (left + w, top), (left + w // 3, top + h)], fill=ink,
           width=max(2, w // 6))
  return np.asarray(image, np.float32) / 255.0


def ink_box(x_HxW, threshold=0.1):
  rows = np.flatnonzero((x_HxW > threshold).any(axis=1))
  cols = np.flatnonzero((x_HxW > threshold).any(axis=0))
  return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def edge_level(grey_HxW):
  """The median of the outermost pixels: the paper's (or screen's) level."""
  return np.median(np.concatenate([grey_HxW[0], grey_HxW[-1], grey_HxW[:, 0],
                                   grey_HxW[:, -1]]))


def test_off_centre_dark_digit_ends_up_centred_light_on_dark_28x28():
  out = digits.to_mnist(paper_digit())
  assert out.shape == (28, 28)
  assert out.max() == pytest.approx(1.0, abs=0.05)  # strokes are bright
  border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
  assert border.max() < 0.05  # background is black
  com_r, com_c = digits.centre_of_mass(out)
  assert abs(com_r - 13.5) <= 0.5 and abs(com_c - 13.5) <= 0.5


@pytest.mark.parametrize("box", [(5, 5, 6, 8), (10, 3, 100, 80), (40, 20, 12, 60)])
def test_longer_side_becomes_20_pixels_keeping_the_aspect_ratio(box):
  grey = paper_digit(width=160, height=100, box=box)
  before_h, before_w = ink_box(1.0 - grey, 0.5)
  h, w = ink_box(digits.to_mnist(grey, digits.Settings(deskew=False)))
  assert max(h, w) in (20, 21)  # resampling may spread ink by a pixel
  assert abs(h / w - before_h / before_w) < 0.25 * (before_h / before_w)


def test_polarity_does_not_matter():
  grey = paper_digit()
  np.testing.assert_allclose(digits.to_mnist(grey), digits.to_mnist(1.0 - grey),
                             atol=1e-5)


def test_grey_paper_and_ink_are_stretched_to_black_and_white():
  out = digits.to_mnist(paper_digit(ink=90, paper=180))
  assert np.median(out) == 0.0 and out.max() == pytest.approx(1.0)


def test_blank_image_is_an_error():
  with pytest.raises(UserError, match="blank"):
    digits.to_mnist(np.full((40, 40), 0.8, np.float32))


@pytest.mark.parametrize("ink_rgb,expected_background", [(0, 1.0), (255, 0.0)])
def test_transparency_is_composited_onto_a_contrasting_background(
    ink_rgb, expected_background):
  alpha = (paper_digit() < 0.5).astype(np.uint8) * 255  # ink opaque, paper clear
  rgba = np.zeros(alpha.shape + (4,), np.uint8)
  rgba[..., :3] = ink_rgb
  rgba[..., 3] = alpha
  grey = digits.to_grey(Image.fromarray(rgba, "RGBA"))
  assert edge_level(grey) == pytest.approx(expected_background)
  assert abs(grey[alpha > 0] - expected_background).min() > 0.9  # ink contrasts


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  pixels = (paper_digit() * 65535).astype(np.uint16)
  Image.fromarray(pixels).save(tmp_path / "deep.png")
  grey = digits.to_grey(digits.read_image(str(tmp_path / "deep.png")))
  np.testing.assert_allclose(grey, pixels / 65535.0, atol=1e-6)


def test_no_preprocess_keeps_28x28_and_rejects_other_sizes():
  x = np.random.default_rng(0).random((28, 28)).astype(np.float32)
  np.testing.assert_array_equal(digits.as_is(x), x)
  with pytest.raises(UserError, match="30x28.*drop --no-preprocess"):
    digits.as_is(np.zeros((28, 30), np.float32), "a.png")


def test_to_uint8_gives_model_bytes():
  out = digits.to_uint8(np.array([[0.0, 0.5, 1.0]]))
  assert out.dtype == np.uint8 and out.shape == (1, 3, 1)
  assert out[..., 0].tolist() == [[0, 128, 255]]


def test_gif_first_frame_is_read(tmp_path):
  frames = [Image.fromarray((paper_digit() * 255).astype(np.uint8)),
            Image.new("L", (120, 90), 0)]
  path = tmp_path / "anim.gif"
  frames[0].save(path, save_all=True, append_images=frames[1:])
  grey = digits.to_grey(digits.read_image(str(path)))
  assert edge_level(grey) > 0.8  # the paper of frame 1, not black frame 2


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"hello, not an image\n", "not an image"),
    (None, "unreadable"),  # a PNG cut in half
])
def test_bad_files_raise_a_message_naming_the_file(tmp_path, content, message):
  path = tmp_path / "bad.png"
  if content is None:
    Image.fromarray((paper_digit() * 255).astype(np.uint8)).save(path)
    content = path.read_bytes()[:200]
  path.write_bytes(content)
  with pytest.raises(UserError, match=message) as e:
    digits.load_digit(str(path))
  assert str(e.value).startswith(str(path))


def test_exif_orientation_turns_a_sideways_photo_upright(tmp_path):
  pixels = (paper_digit() * 255).astype(np.uint8)  # 120 wide, 90 high
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write
  Image.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
  upright = np.asarray(digits.read_image(str(tmp_path / "sideways.png")))
  np.testing.assert_array_equal(upright, np.rot90(pixels, k=-1))


def photo(effect=None, seed=0):
  """A '7' on paper, 200x160, with one of the photo benchmark's distortions."""
  grey = paper_digit(width=200, height=160, box=(80, 40, 50, 80), ink=40, paper=220)
  if effect is None:
    return grey
  return np.clip(effect(np.random.default_rng(seed), grey), 0.0, 1.0).astype(np.float32)


def similarity(a, b):
  """Cosine similarity of two 28x28 images: 1 for the same ink."""
  return np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))


@pytest.mark.parametrize("effect", [photo_benchmark.gradient, photo_benchmark.shadow,
                                    photo_benchmark.noise, photo_benchmark.border,
                                    photo_benchmark.ruled, photo_benchmark.blur])
def test_a_photos_distortion_leaves_the_digit_as_on_clean_paper(effect):
  clean = digits.to_mnist(photo())  # a crop to all dark pixels scores 0.2-0.45
  for seed in range(3):
    assert similarity(digits.to_mnist(photo(effect, seed)), clean) > 0.85, seed


def test_a_large_speck_away_from_the_digit_is_dropped():
  grey = photo()
  grey[130:140, 20:30] = 0.15  # a blot 10x10 pixels, far from the digit
  np.testing.assert_allclose(digits.to_mnist(grey), digits.to_mnist(photo()), atol=1e-6)


def slant(x_HxW):
  mu = measure.moments_central(x_HxW, order=2)
  return mu[1, 1] / mu[2, 0]


def test_deskew_makes_a_slanted_stroke_upright():
  image = Image.new("L", (120, 120), 255)
  ImageDraw.Draw(image).line([(80, 10), (40, 110)], fill=0, width=8)
  grey = np.asarray(image, np.float32) / 255.0
  assert abs(slant(digits.to_mnist(grey, digits.Settings(deskew=False)))) > 0.3
  assert abs(slant(digits.to_mnist(grey))) < 0.05


def test_a_fine_pen_on_a_large_sheet_is_thickened_to_mnist_strokes():
  image = Image.new("L", (400, 400), 255)
  ImageDraw.Draw(image).line([(150, 60), (250, 60), (180, 340)], fill=0, width=2)
  out = digits.to_mnist(np.asarray(image, np.float32) / 255.0)
  assert digits.stroke_width(out) >= 1.5  # 2 pixels in 280 would be 0.14 in 20


@pytest.mark.parametrize("field,value", [("background_scale", 0.0), ("min_part", 1.5)])
def test_settings_out_of_range_are_refused_naming_the_flag(field, value):
  with pytest.raises(UserError, match=f"--{field} {value}: use a number between 0 and 1"):
    digits.Settings(**{field: value}).check()
