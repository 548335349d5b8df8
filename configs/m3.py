r"""M3 of An et al. 2020 (arXiv:2008.10400), their `full` recipe: 1,124,180 parameters.

  python -m mnist_jax train --config configs/m3.py --workdir runs/m3

Ten bias-free 'VALID' 3x3 convolutions (32, 48, ..., 176 channels, +16 each),
each with batch norm and ReLU, shrink the 28x28 input to 8x8x176.
No pooling, then one bias-free dense layer with batch norm to 10 logits
(mnist_jax/core/models/simple_cnn.py), trained with An et al.'s recipe
(mnist_jax/core/recipes.py: an2020, where the recipe, its published numbers and
our deviations are written down). Meant for a GPU/TPU.
No accuracy measured yet.
"""

from mnist_jax.core.recipes import an2020


def get_config():
  return an2020(kernel_size=3, channels=(32, 48, 64, 80, 96, 112, 128, 144, 160, 176))
