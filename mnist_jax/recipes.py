"""Training recipes shared by several config files."""

from __future__ import annotations

from typing import Sequence

import ml_collections

from mnist_jax.config import base_config


def an2020(kernel_size: int, channels: Sequence[int]) -> ml_collections.ConfigDict:
  """An et al. 2020's recipe for their simple CNNs (M3, M5, M7), as in their code.

  Adam 1e-3 decayed by 0.98 after every epoch, batch 120, 150 epochs, random
  rotation up to 20 degrees and shift up to 20%, an EMA of the weights
  (decay 0.999) for evaluation.
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
