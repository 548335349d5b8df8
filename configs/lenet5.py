r"""LeNet-5 (LeCun et al. 1998), with ReLU and max pooling: 61,706 parameters.

  python -m mnist_jax train --config configs/lenet5.py --workdir runs/lenet5

Deviations from the paper are listed in mnist_jax/core/models/lenet5.py. Adam 1e-3
with a cosine schedule, batch 128, 20 epochs (the paper also trained 20).
"""

from mnist_jax.core.config import base_config


def get_config():
  config = base_config()
  config.model = dict(
      name="lenet5",
      activation="relu",  # the paper: scaled tanh
      pooling="max",  # max | avg (the paper: trainable subsampling)
      num_classes=10,
  )
  config.num_epochs = 20
  return config
