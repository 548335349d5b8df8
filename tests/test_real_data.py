"""On the real MNIST files (../shared/data/mnist or $MNIST_DIR), when present."""

import numpy as np
import pytest

from mnist_jax.train import train_and_evaluate

from configs import mlp as mlp_config

pytestmark = pytest.mark.real_data


def test_real_splits_have_the_published_sizes(real_mnist):
  train, test = real_mnist
  assert train.images.shape == (60_000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10_000, 28, 28, 1)
  assert set(np.unique(test.labels)) == set(range(10))
  assert train.images.max() == 255  # raw bytes: scaling to [0, 1] happens on device


def test_one_epoch_of_the_mlp_reaches_95_percent(real_mnist, tmp_path):
  config = mlp_config.get_config()
  config.num_epochs = 1
  config.optimizer.schedule = "constant"  # a 1-epoch cosine spends half of it near 0
  config.optimizer.learning_rate = 3e-3
  final = train_and_evaluate(config, str(tmp_path / "mlp"), data=real_mnist,
                             verbose=False)
  assert final["test_count"] == 10_000
  assert final["test_accuracy"] >= 0.95
