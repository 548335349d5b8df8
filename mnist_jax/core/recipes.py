"""Training recipes shared by several config files."""

from __future__ import annotations

from typing import Sequence

import ml_collections

from mnist_jax.core.config import base_config


def an2020(kernel_size: int, channels: Sequence[int]) -> ml_collections.ConfigDict:
  """An et al. 2020's recipe for their simple CNNs (M3, M5, M7).

  As in the authors' code (github.com/ansh941/MnistSimpleCNN, code/train.py):
  Adam 1e-3 decayed by 0.98 after every epoch, batch 120, 150 epochs, each
  training image randomly rotated by up to 20 degrees and shifted by up to 20%
  of its size, and an EMA of the weights (decay 0.999) used for evaluation.
  Their rotation samples the nearest pixel and their shifts are whole pixels;
  ours (mnist_jax/core/augment.py) are bilinear and continuous. On the project's
  2-core CPU, 150 epochs of these models are far too slow: a GPU/TPU recipe.

  Published (An et al. 2020): majority vote of M3, M5 and M7 99.87% test
  accuracy, a two-level ensemble 99.91%. Their code kept, for every run, the
  epoch with the best *test* accuracy; here the last epoch is reported (no
  model selection on the test set).
  """
  config = base_config()
  config.model = dict(name="simple_cnn", kernel_size=kernel_size,
                      channels=tuple(channels), num_classes=10)
  config.num_epochs = 150
  config.batch_size = 120
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "exponential"
  config.optimizer.decay_per_epoch = 0.98
  config.ema_decay = 0.999
  config.augment.update(dict(
      enabled=True, rotation_deg=20.0, translate_frac=0.2,
      elastic_alpha=0.0))  # An et al. use no elastic distortion
  return config
