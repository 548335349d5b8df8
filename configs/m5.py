r"""M5 of An et al. 2020 (arXiv:2008.10400), their `full` recipe: 1,128,180 parameters.

  python -m mnist_jax train --config configs/m5.py --workdir runs/m5

Five bias-free 'VALID' 5x5 convolutions (32, 64, 96, 128, 160 channels),
each with batch norm and ReLU, shrink the 28x28 input to 8x8x160.
No pooling, then one bias-free dense layer with batch norm to 10 logits
(mnist_jax/core/models/simple_cnn.py), trained with An et al.'s recipe
(mnist_jax/core/recipes.py: an2020, where the recipe, its published numbers and
our deviations are written down). Meant for a GPU/TPU.
No accuracy measured yet.
"""

from mnist_jax.core.recipes import an2020


def get_config():
  return an2020(kernel_size=5, channels=(32, 64, 96, 128, 160))
