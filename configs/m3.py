r"""M3 of An et al. 2020 (arXiv:2008.10400), their `full` recipe: 1,124,180 parameters.

  python -m mnist_jax train --config configs/m3.py --workdir runs/m3

Ten bias-free 'VALID' 3x3 convolutions (32, 48, ..., 176 channels, +16 each),
each with batch norm and ReLU, shrink the 28x28 input to 8x8x176.
No pooling, then one bias-free dense layer with batch norm to 10 logits
(mnist_jax/models/simple_cnn.py). Training as in the authors' code
(github.com/ansh941/MnistSimpleCNN, code/train.py): Adam 1e-3 decayed by 0.98
after every epoch, batch 120, 150 epochs, each training image randomly
rotated by up to 20 degrees and shifted by up to 20% of its size, and an EMA
of the weights (decay 0.999) used for evaluation. Their rotation samples the
nearest pixel and their shifts are whole pixels; ours (mnist_jax/augment.py)
are bilinear and continuous. Meant for a GPU/TPU: on the
project's 2-core CPU, 150 epochs of this model are far too slow.

Expected (published, An et al. 2020): majority vote of M3, M5 and M7 99.87%
test accuracy, a two-level ensemble 99.91%; the issue expects >= 99.75% for a
single model. Their code kept, for every run, the epoch with the best *test*
accuracy; here the last epoch is reported (no model selection on the test set).
Measured here: nothing yet (needs the batch-norm train state and augmentation
in the train step).
"""

import ml_collections

from mnist_jax.config import base_config


def get_config():
  config = base_config()
  config.model = dict(
      name="simple_cnn",
      kernel_size=3,
      channels=(32, 48, 64, 80, 96, 112, 128, 144, 160, 176),
      num_classes=10,
  )
  config.num_epochs = 150
  config.batch_size = 120
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "exponential"
  config.optimizer.decay_per_epoch = 0.98
  config.ema_decay = 0.999
  # All fields, so the recipe is complete on its own (defaults: config.py).
  config.augment = ml_collections.ConfigDict(dict(
      enabled=True,
      rotation_deg=20.0,
      translate_frac=0.2,
      scale_min=1.0,
      scale_max=1.0,
      elastic_alpha=0.0,  # An et al. use no elastic distortion
      elastic_sigma=4.0,
  ))
  return config
