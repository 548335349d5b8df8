r"""M7 of An et al. 2020 (arXiv:2008.10400), their `full` recipe: 2,291,972 parameters.

  python -m mnist_jax train --config configs/m7.py --workdir runs/m7

Four bias-free 'VALID' 7x7 convolutions (48, 96, 144, 192 channels), each
with batch norm and ReLU, shrink the 28x28 input to 4x4x192.
No pooling, then one bias-free dense layer with batch norm to 10 logits
(mnist_jax/core/models/simple_cnn.py), trained with An et al.'s recipe
(mnist_jax/core/recipes.py: an2020, where the recipe, its published numbers and
our deviations are written down). Meant for a GPU/TPU.
No accuracy measured yet.
"""

from mnist_jax.core.recipes import an2020


def get_config():
  return an2020(kernel_size=7, channels=(48, 96, 144, 192))
