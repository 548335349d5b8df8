"""Inference inputs: huge images, figure paths, run lists, the article of 8."""

import numpy as np
import pytest
from PIL import Image

from mnist_jax import UserError
from mnist_jax.inference import digits, ensemble, predict


@pytest.mark.parametrize("side", [14_000, 10_000], ids=["bomb_error", "bomb_warning"])
def test_an_image_too_large_to_decode_safely_is_a_user_error(tmp_path, side):
  """Over 2x MAX_IMAGE_PIXELS Pillow raises; between 1x and 2x it only warns,
  and would decode 100 megapixels."""
  path = tmp_path / "big.png"
  Image.new("1", (side, side)).save(path)
  with pytest.raises(UserError, match=r"big\.png: too large to decode safely.*at most"):
    digits.read_image(str(path))


@pytest.mark.parametrize("digit, article", [(8, "an"), (5, "a"), (1, "a"), (0, "a")])
def test_the_article_fits_the_digit(digit, article):
  probs = np.full(10, 0.01, np.float32)
  probs[digit] = 0.91
  line = predict.describe(predict.Prediction("x.png", probs=probs))
  assert line == f"x.png: The number is probably {article} {digit} (91.0%)"


def test_a_figure_path_is_checked_before_predicting(tmp_path, monkeypatch):
  predict.check_figure_path(str(tmp_path / "ok.png"))
  with pytest.raises(UserError, match="does not exist"):
    predict.check_figure_path(str(tmp_path / "missing" / "out.png"))
  with pytest.raises(UserError, match="is a folder"):
    predict.check_figure_path(str(tmp_path))
  with pytest.raises(UserError, match="unknown image format 'txt'"):
    predict.check_figure_path(str(tmp_path / "out.txt"))
  # Simulated: these tests may run as root, who can write any folder.
  monkeypatch.setattr(predict.os, "access", lambda path, mode: False)
  with pytest.raises(UserError, match="is not writable"):
    predict.check_figure_path(str(tmp_path / "ok.png"))


@pytest.mark.parametrize("workdirs, message", [
    (["", ""], "no runs given"),
    ([], "no runs given"),
    (["runs/a", "", "runs/b"], "has an empty entry"),
    (["runs/a"], "at least two runs"),
])
def test_bad_run_lists_are_named_for_what_they_are(workdirs, message):
  with pytest.raises(UserError, match=message):
    ensemble.evaluate_ensemble(workdirs)


def test_a_newline_in_a_file_name_stays_on_one_escaped_line():
  probs = np.full(10, 0.01, np.float32)
  probs[3] = 0.91
  line = predict.describe(predict.Prediction("evil\nname\r.png", probs=probs))
  assert line == "evil\\nname\\r.png: The number is probably a 3 (91.0%)"
  assert predict.printable("naïve digit.png") == "naïve digit.png"


@pytest.mark.parametrize("top, uncertain", [(0.91, False), (0.5, True)])
def test_a_low_top_probability_is_said_to_be_uncertain(top, uncertain):
  probs = np.full(10, (1 - top) / 9, np.float32)
  probs[5] = top
  result = predict.Prediction("x.png", probs=probs)
  line = predict.describe(result, uncertain_below=0.8)
  expected = ("x.png: Uncertain: the number may be a 5 (50.0%, under 80%)" if uncertain
              else "x.png: The number is probably a 5 (91.0%)")
  assert line == expected
  assert result.to_json(1, uncertain_below=0.8)["uncertain"] is uncertain
