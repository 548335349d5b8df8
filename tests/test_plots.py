"""Figures of a trained run: each produced at its size, and what each shows
(panels, titles, labels, plotted values) read from its matplotlib objects."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_jax import UserError
from mnist_jax.core import run_dir
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.inference import figures, plots, trained

REPO = pathlib.Path(__file__).resolve().parents[1]
CONV_ONLY = ("conv_kernels", "feature_maps")


def assert_valid_png(path, name):
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size == figures.pixel_size(name)


@pytest.fixture
def drawn(monkeypatch):
  """{figure name: the matplotlib Figure make_figures saved}."""
  kept, save = {}, figures.save

  def keep(fig, path):
    kept[pathlib.Path(path).stem] = fig
    return save(fig, path)
  monkeypatch.setattr(figures, "save", keep)
  return kept


def image_panels(fig):
  """The axes of a figure that show an image, with their titles."""
  return [ax.get_title() for ax in fig.axes if ax.get_images()]


def check_common_figures(drawn, run, test, digit):
  """What the figures every run draws show, read from their matplotlib objects."""
  model = trained.load(run)
  probs = model.probabilities(test.images)
  errors = int((probs.argmax(-1) != test.labels).sum())
  samples = image_panels(drawn["train_samples"])
  assert len(samples) == plots.NUM_SAMPLES
  assert all(re.fullmatch(r"label \d", t) for t in samples), samples
  confusion = drawn["confusion_matrix"].axes[0]
  assert (confusion.get_xlabel(), confusion.get_ylabel()) == ("predicted", "true")
  assert sum(int(t.get_text()) for t in confusion.texts) == len(test)
  assert f"{1 - errors / len(test):.2%}" in confusion.get_title()
  per_class = drawn["per_class_accuracy"].axes[0]
  heights = [bar.get_height() for bar in per_class.patches]
  expected = [100 * np.mean(probs[test.labels == d].argmax(-1) == d) for d in range(10)]
  np.testing.assert_allclose(heights, expected)
  wrong = image_panels(drawn["misclassified"])
  assert len(wrong) == min(24, errors) and all("true" in t and "pred" in t for t in wrong)
  loss, accuracy = drawn["learning_curves"].axes
  lines = run_dir.read_metrics(run)
  assert [ax.get_title() for ax in (loss, accuracy)] == ["Loss", "Accuracy"]
  train_loss, test_loss = (line.get_ydata().tolist() for line in loss.get_lines())
  assert train_loss == [m["train_loss"] for m in lines]
  assert test_loss == [m["test_loss"] for m in lines]
  image, bars = drawn["softmax"].axes
  assert image.get_title() == f"test #{digit}, label {test.labels[digit]}"
  shown = [bar.get_height() for bar in bars.patches]
  np.testing.assert_allclose(shown, probs[digit], rtol=1e-5)
  assert f"probably a {int(np.argmax(shown))}" in bars.get_title()


def copy_of(run, tmp_path):
  """The session's run, copied: a test that writes figures leaves it as it was."""
  return str(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.real_data
def test_every_figure_of_a_cnn_run(cnn_run, real_mnist, drawn, tmp_path):
  cnn_run = copy_of(cnn_run, tmp_path)
  written, skipped = plots.make_figures(cnn_run, digit=3, data=real_mnist)
  assert skipped == {}
  assert set(written) == set(figures.FIGSIZES) == set(drawn)
  for name, path in written.items():
    assert path == os.path.join(cnn_run, "figures", f"{name}.png")
    assert_valid_png(path, name)
  check_common_figures(drawn, cnn_run, real_mnist[1], digit=3)
  assert image_panels(drawn["conv_kernels"]) == [f"filter {i}" for i in range(4)]
  maps = drawn["feature_maps"]
  assert image_panels(maps)[0] == "input"
  assert len(image_panels(maps)) == 1 + 4 + 8  # the input; stage 1's 4, stage 2's 8 channels
  label = real_mnist[1].labels[3]
  assert maps.get_suptitle().startswith(f"Test image #3 (label {label})")


@pytest.mark.real_data
def test_dense_run_skips_the_conv_figures_with_a_reason(mlp_run, real_mnist, drawn, tmp_path):
  mlp_run = copy_of(mlp_run, tmp_path)
  written, skipped = plots.make_figures(mlp_run, data=real_mnist)
  assert set(skipped) == set(CONV_ONLY)
  assert all("no conv layers" in why for why in skipped.values())
  assert set(written) == set(figures.FIGSIZES) - set(CONV_ONLY) == set(drawn)
  for name, path in written.items():
    assert_valid_png(path, name)
  check_common_figures(drawn, mlp_run, real_mnist[1], digit=0)


@pytest.mark.real_data
def test_feature_maps_are_captured_without_changing_the_model(cnn_run, real_mnist):
  model = trained.load(cnn_run)
  image = real_mnist[1].images[0]
  maps = model.feature_maps(image)
  assert [m.shape for m in maps] == [(28, 28, 4), (14, 14, 8)]  # before each pool
  assert min(m.min() for m in maps) >= 0.0  # after ReLU
  plain = model.model.apply({"params": model.params}, image[None] / 255.0)
  np.testing.assert_allclose(model.probabilities(image[None])[0],
                             np.exp(plain[0]) / np.exp(plain[0]).sum(), rtol=1e-5)


@pytest.mark.real_data
def test_bad_digit_index_names_the_range(mlp_run, real_mnist):
  with pytest.raises(UserError, match="0 to 9999"):
    plots.make_figures(mlp_run, digit=10_000, data=real_mnist)


def test_confusion_matrix_and_confident_errors():
  labels = np.array([0, 1, 2, 2, 1])
  probs = np.array([[0.9, 0.1, 0.0],   # right
                    [0.3, 0.6, 0.1],   # right
                    [0.6, 0.0, 0.4],   # wrong, 0.6
                    [0.0, 0.95, 0.05],  # wrong, 0.95
                    [0.8, 0.2, 0.0]])  # wrong, 0.8
  counts = figures.confusion_matrix(labels, probs.argmax(-1), num_classes=3)
  assert counts.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
  assert eval_lib.confident_mistakes(labels, probs, 2).tolist() == [3, 4]


@pytest.mark.real_data
def test_cli_plot_pdf(mlp_run, tfds_dir, tmp_path):
  mlp_run = copy_of(mlp_run, tmp_path)
  env = dict(os.environ, TFDS_DATA_DIR=tfds_dir, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "mnist_jax", "plot", "--workdir", mlp_run,
       "--format", "pdf", "--digit", "7"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "skipped conv_kernels: model 'mlp' has no conv layers" in result.stdout
  for name in set(figures.FIGSIZES) - set(CONV_ONLY):
    path = pathlib.Path(mlp_run, "figures", f"{name}.pdf")
    assert path.read_bytes()[:5] == b"%PDF-", name


def test_model_without_stage_activations_skips_only_the_feature_maps():
  import types
  import ml_collections
  from mnist_jax.core.models.simple_cnn import SimpleCNN
  fake = types.SimpleNamespace(
      conv_stages=["conv0", "conv1"], model=SimpleCNN(),
      config=ml_collections.ConfigDict({"model": {"name": "simple_cnn"}}))
  reasons = plots.skipped_reasons(fake, metrics_lines=3)
  assert set(reasons) == {"feature_maps"}
  assert "simple_cnn" in reasons["feature_maps"]
