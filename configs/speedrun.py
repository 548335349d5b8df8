r"""Speedrun: a small CNN trained for 2 epochs, aiming at >= 99.0% mean test accuracy.

  python -m mnist_jax train --config configs/speedrun.py --workdir runs/speedrun/0

Five seeds in one program (mnist_jax/multiseed.py):

  python -c "from mnist_jax.multiseed import train_seeds; from configs import speedrun; \
    train_seeds(speedrun.get_config(), range(5), [f'runs/speedrun/{s}' for s in range(5)])"

conv16(3x3)-maxpool-conv32(3x3)-maxpool-dense128-dense10, ReLU, no dropout,
Adam with a one-cycle schedule peaking at 3e-3, batch 128, 2 epochs, trained
on the 60,000 training images only (no test-set stopping or selection: the
schedule is fixed and the last epoch is reported). Measured runtime and
accuracy: docs/performance.md.
"""

from mnist_jax.config import base_config


def get_config():
  config = base_config()
  config.model = dict(
      name="cnn",
      features=(16, 32),
      kernel_sizes=(3, 3),
      strides=(1, 1),
      activations=("relu", "relu"),
      pooling=("max", "max"),
      pool_size=2,
      dense_features=(128,),
      dropout_rate=0.0,
      num_classes=10,
      conv_impl="xla",
  )
  config.optimizer.schedule = "onecycle"
  config.optimizer.learning_rate = 3e-3
  config.num_epochs = 2
  return config
