"""The photo benchmark's pictures (deterministic, readable, labelled) and its
tally, on a few synthetic digits (no model)."""

import io
import os

import numpy as np
from PIL import Image

from mnist_jax.inference import photo_benchmark, predict


def a_digit():
  pixels = np.zeros((28, 28), np.uint8)
  pixels[4:24, 12:16] = 255  # a '1'
  return pixels


def test_every_distortion_draws_the_same_picture_from_the_same_seed():
  for k, distortion in enumerate(photo_benchmark.DISTORTIONS):
    first = photo_benchmark.draw(np.random.default_rng([0, k, 0]), a_digit(), distortion)
    again = photo_benchmark.draw(np.random.default_rng([0, k, 0]), a_digit(), distortion)
    other = photo_benchmark.draw(np.random.default_rng([1, k, 0]), a_digit(), distortion)
    assert first == again and first != other, distortion
    with Image.open(io.BytesIO(first)) as image:
      assert min(image.size) >= 120


def test_light_on_dark_is_a_dark_sheet_and_clean_a_light_one():
  names = list(photo_benchmark.DISTORTIONS)
  for distortion, dark in (("light on dark", True), ("clean", False)):
    k = names.index(distortion)
    data = photo_benchmark.draw(np.random.default_rng([0, k, 0]), a_digit(), distortion)
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert (np.median(grey) < 0.35 * 255) == dark and (np.median(grey) > 0.7 * 255) != dark


def test_files_are_named_by_label_and_scored_per_distortion(tmp_path):
  images = np.stack([a_digit(), a_digit()])
  photo_benchmark.write(str(tmp_path), images, np.array([1, 7]))
  folders = sorted(os.listdir(tmp_path))
  assert len(folders) == len(photo_benchmark.DISTORTIONS)
  assert sorted(os.listdir(tmp_path / "clean")) == ["00000_1.png", "00001_7.png"]
  assert os.listdir(tmp_path / "JPEG")[0].endswith(".jpg")

  def always_one(folder):  # right for the first picture, wrong for the second
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
    probs = np.eye(10, dtype=np.float32)[1]
    return [predict.Prediction(p, probs=probs) for p in paths]

  results = photo_benchmark.score(always_one, str(tmp_path), uncertain_below=1.5)
  assert all(r == {"correct": 1, "count": 2, "unreadable": 0, "uncertain_right": 1,
                   "uncertain_wrong": 1} for r in results.values())
  assert ("| **overall** | **50.0%** | 11 / 22 | 0 | 11 / 11 |"
          in photo_benchmark.table(results))
