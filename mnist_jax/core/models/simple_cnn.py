"""M3, M5 and M7 of An, Lee, Park, Yang and So (2020), arXiv:2008.10400.

"An Ensemble of Simple Convolutional Neural Network Models for MNIST Digit
Recognition". Each model is a stack of

  Conv(k x k, 'VALID', no bias) -> BatchNorm -> ReLU

with no pooling, so every layer shrinks the map by k - 1; then the map is
flattened into one Dense(10, no bias) -> BatchNorm, whose output are the logits.
Widths, as in the authors' code (github.com/ansh941/MnistSimpleCNN,
code/models/modelM{3,5,7}.py):

  M3: k=3, 32-48-64-80-96-112-128-144-160-176, 28 -> 8, flatten 8*8*176 = 11,264
  M5: k=5, 32-64-96-128-160,                   28 -> 8, flatten 8*8*160 = 10,240
  M7: k=7, 48-96-144-192,                      28 -> 4, flatten 4*4*192 =  3,072

Differences from their PyTorch code, on purpose:
- Their input is rescaled to [-1, 1] first. With 'VALID' convolutions (no
  zero padding) and no bias, 2x - 1 only scales each first-layer output and
  shifts it by a per-channel constant, which the batch norm removes, so the
  [0, 1] input gives the same function (up to epsilon); it is left out.
- BatchNorm is flax's with momentum 0.9 (PyTorch's 0.1 means the same) and
  epsilon 1e-3 (PyTorch: 1e-5), the project's shared batch-norm setting.
- Initialisation is flax's (lecun normal), not PyTorch's kaiming uniform.
"""

from __future__ import annotations

from typing import List, Sequence

import flax.linen as nn
import jax

from mnist_jax.core.errors import UserError
from mnist_jax.core.models import register
from mnist_jax.core.models.layers import batch_norm

INPUT_SIZE = 28  # MNIST images are 28x28


@register("simple_cnn")
class SimpleCNN(nn.Module):
  """Bias-free 'VALID' conv + BN + ReLU layers, no pooling, then dense + BN."""

  kernel_size: int = 5
  channels: Sequence[int] = (32, 64, 96, 128, 160)
  num_classes: int = 10

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    x, k = x_BxHxWxC, self.kernel_size
    for i, features in enumerate(self.channels):
      x = nn.Conv(features, (k, k), padding="VALID", use_bias=False,
                  name=f"conv{i}")(x)
      x = nn.relu(batch_norm(train, f"bn{i}")(x))
    x = x.reshape(x.shape[0], -1)  # flatten size follows from the config
    logits = nn.Dense(self.num_classes, use_bias=False, name="logits")(x)
    return batch_norm(train, "logits_bn")(logits)

  def feature_map_sizes(self, input_size: int = INPUT_SIZE) -> List[int]:
    """Side of the map after each layer; rejects a stack that shrinks it to nothing."""
    sizes, n, k = [], input_size, self.kernel_size
    for i in range(len(self.channels)):
      n -= k - 1
      if n < 1:
        raise UserError(
            f"simple_cnn: {len(self.channels)} 'VALID' {k}x{k} convolutions shrink "
            f"the {input_size}x{input_size} input to nothing at layer {i + 1}: use "
            "fewer channels entries or a smaller kernel_size.")
      sizes.append(n)
    return sizes

  def validate(self) -> None:
    if int(self.kernel_size) < 1:
      raise UserError(f"config.model.kernel_size = {self.kernel_size}: use a "
                      "positive integer.")
    if not self.channels or any(int(c) < 1 for c in self.channels):
      raise UserError(f"config.model.channels = {tuple(self.channels)}: give one "
                      "positive width per conv layer.")
    self.feature_map_sizes()
