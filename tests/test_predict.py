"""Predicting a user's image files with a trained run (the session's MLP)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_jax.inference import predict, trained

pytestmark = pytest.mark.real_data
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlp(mlp_run):
  return trained.load(mlp_run)


@pytest.fixture(scope="module")
def confident_test_digits(mlp, real_mnist):
  """Three test images of different digits the model gets right with p > 0.9.

  The files below test the reading and preprocessing path, not the model's
  accuracy, so they start from images the model itself is sure about.
  """
  _, test = real_mnist
  probs = mlp.probabilities(test.images[:200])
  chosen, seen = [], set()
  for i, p in enumerate(probs):
    if p.argmax() == test.labels[i] and p.max() > 0.9 and test.labels[i] not in seen:
      chosen.append((test.images[i, ..., 0], int(test.labels[i])))
      seen.add(test.labels[i])
    if len(chosen) == 3:
      return chosen
  pytest.fail("the 1-epoch MLP is sure of fewer than 3 digits in 200 test images")


def as_png(pixels, path):
  Image.fromarray(pixels, "L").save(path)


def as_dark_on_light_jpeg(pixels, path):
  """Inverted (black ink on white), 3x larger and off-centre on a wider sheet."""
  big = Image.fromarray(255 - pixels, "L").resize((84, 84), Image.Resampling.BICUBIC)
  sheet = Image.new("L", (150, 110), 255)
  sheet.paste(big, (50, 20))
  sheet.save(path, quality=90)


def as_rgba_png(pixels, path):
  """Black ink whose alpha is the stroke, on a fully transparent canvas."""
  rgba = np.zeros(pixels.shape + (4,), np.uint8)
  rgba[..., 3] = pixels
  Image.fromarray(rgba, "RGBA").save(path)


@pytest.mark.parametrize("write,suffix", [(as_png, ".png"),
                                          (as_dark_on_light_jpeg, ".jpg"),
                                          (as_rgba_png, ".png")])
def test_mnist_digit_saved_as_a_file_is_predicted_as_its_label(
    mlp, confident_test_digits, tmp_path, write, suffix):
  paths, labels = [], []
  for n, (pixels, label) in enumerate(confident_test_digits):
    paths.append(str(tmp_path / f"d{n}{suffix}"))
    write(pixels, paths[-1])
    labels.append(label)
  results = predict.predict_files(mlp, paths)
  assert [r.error for r in results] == [None] * len(paths)
  assert [r.top(1)[0][0] for r in results] == labels


def test_no_preprocess_feeds_the_bytes_unchanged(mlp, confident_test_digits, tmp_path):
  pixels, label = confident_test_digits[0]
  as_png(pixels, tmp_path / "raw.png")
  [result] = predict.predict_files(mlp, [str(tmp_path / "raw.png")], preprocess=False)
  np.testing.assert_array_equal(result.image[..., 0], pixels)
  assert result.top(1)[0][0] == label


def run_predict(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "mnist_jax", "predict", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_cli_predicts_a_folder_in_order_and_reports_bad_files(
    mlp_run, confident_test_digits, tmp_path):
  folder = tmp_path / "mixed"
  folder.mkdir()
  (pixels_a, label_a), (pixels_b, label_b) = confident_test_digits[:2]
  as_dark_on_light_jpeg(pixels_b, folder / "b.jpg")
  as_png(pixels_a, folder / "a.png")
  (folder / "c_empty.png").write_bytes(b"")
  (folder / "d_notes.txt").write_text("not an image\n")
  as_png(pixels_a, folder / "e_cut.png")
  (folder / "e_cut.png").write_bytes((folder / "e_cut.png").read_bytes()[:60])
  result = run_predict("--workdir", mlp_run, "--top", "3", str(folder))
  assert result.returncode == 1, result.stderr
  lines = result.stdout.splitlines()
  assert [l.split(":")[0] for l in lines] == [str(folder / "a.png"), str(folder / "b.jpg")]
  assert lines[0].startswith(f"{folder / 'a.png'}: The number is probably a {label_a} (")
  assert f"The number is probably a {label_b} (" in lines[1]
  assert lines[0].count("%") == 4  # the best guess, then the top 3
  errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert [e.split(":")[1].strip() for e in errors] == [
      str(folder / n) for n in ("c_empty.png", "d_notes.txt", "e_cut.png")]
  assert "Traceback" not in result.stderr


def test_cli_json_and_figure(cli_here, mlp_run, confident_test_digits, tmp_path):
  (pixels, label), _, (pixels_c, label_c) = confident_test_digits
  as_png(pixels, tmp_path / "one.png")
  as_rgba_png(pixels_c, tmp_path / "two.png")
  figure = tmp_path / "seen.png"
  result = cli_here("predict", "--workdir", mlp_run, "--json", "--top", "2",
                    "--figure", figure, "--figure_limit", "1",
                    tmp_path / "one.png", tmp_path / "two.png")
  assert result.returncode == 0, result.stderr
  records = json.loads(result.stdout)
  assert [r["digit"] for r in records] == [label, label_c]
  assert all(len(r["top"]) == 2 and r["top"][0]["digit"] == r["digit"] for r in records)
  assert all(0.0 <= r["probability"] <= 1.0 for r in records)
  assert [r["uncertain"] for r in records] == [r["probability"] < 0.8 for r in records]
  assert "shows the first 1 of 2 pictures, 1 left out" in result.stderr
  with Image.open(figure) as image:
    assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 0
    assert image.height < image.width  # one row of steps, not two
