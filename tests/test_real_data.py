"""On the real MNIST files (../shared/data/mnist or $MNIST_DIR), when present."""

import numpy as np
import pytest

from mnist_jax.core import run_dir

pytestmark = pytest.mark.real_data


def test_real_splits_have_the_published_sizes(real_mnist):
  train, test = real_mnist
  assert train.images.shape == (60_000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10_000, 28, 28, 1)
  assert set(np.unique(test.labels)) == set(range(10))
  assert train.images.max() == 255  # raw bytes: scaling to [0, 1] happens on device


def test_one_epoch_of_the_mlp_reaches_95_percent(mlp_run):
  """The article's MLP after one epoch on the real data (conftest's mlp_run)."""
  last = run_dir.read_metrics(mlp_run)[-1]
  assert last["epoch"] == 1 and last["test_count"] == 10_000
  assert last["test_accuracy"] >= 0.95
