r"""Speedrun: a small CNN trained for 2 epochs, aiming at >= 99.0% mean test accuracy.

  python -m mnist_jax train --config configs/speedrun.py --workdir runs/speedrun/0

Five seeds end to end: `python -m mnist_jax speedrun` runs the command above
once per seed (--config.seed=0..4, each its own process and workdir) and lists
each seed's test accuracy, training time and whole-command time, the mean and
how many seeds fall below 99.0%. (`--seeds 0,1,2,3,4` trains them in one
vmapped program, but for this config on the 2-core CPU that is slower than
separate runs: see docs/performance.md.)

conv16(3x3)-maxpool-conv32(3x3)-maxpool-dense128-dense10, ReLU, no dropout,
Adam with a one-cycle schedule peaking at 3e-3, batch 64, 2 epochs, trained
on the 60,000 training images only (no test-set stopping or selection: the
schedule is fixed and the last epoch is reported). Recipe choices are made on
a validation split (the last 5,000 training images held out,
config.data.validation_size), never on test accuracy: one epoch instead of
two measured 98.66-98.84% validation accuracy (peak 2e-3 to 5e-3, batch 32
or 64; seeds 0 and 1, measured 2026-11-30) against 99.08/99.00% for two
(seeds 0, 1, an earlier session), so the recipe keeps two epochs. Measured
runtime and accuracy: docs/performance.md.
"""

from mnist_jax.core.config import base_config


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
      conv_impl="auto",
  )
  config.batch_size = 64  # more steps per epoch; also more img/s on the 2-core CPU
  config.optimizer.schedule = "onecycle"
  config.optimizer.learning_rate = 3e-3
  config.num_epochs = 2
  # A ~12 s epoch needs no mid-epoch checkpoint; each one is a host sync.
  config.checkpoint.every_steps = 0
  # Nothing the run's accuracy needs: no extra pass over the test set for the
  # misclassified grid, no host sync every 50 steps for TensorBoard's loss.
  config.log_misclassified = 0
  config.log_every_steps = 0
  return config
