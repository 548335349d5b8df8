"""A fully connected network: every input connects to every output, no sharing.

The article's model is Flatten(28x28) -> Dense(128, ReLU) -> Dense(10):
784*128 + 128 = 100,480 and 128*10 + 10 = 1,290 parameters, 101,770 in all.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from mnist_jax.core.errors import UserError
from mnist_jax.core.models import register
from mnist_jax.core.models.layers import activation


@register("mlp")
class MLP(nn.Module):
  """Flatten -> [Dense(h), activation, dropout] per hidden size -> Dense(classes)."""

  hidden_features: Sequence[int] = (128,)
  activation: str = "relu"
  dropout_rate: float = 0.0
  num_classes: int = 10

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    x = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
    for width in self.hidden_features:
      x = activation(self.activation)(nn.Dense(width)(x))
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)  # logits; softmax lives in the loss

  def validate(self) -> None:
    activation(self.activation)  # the name now, not at the first call
    if any(int(width) < 1 for width in self.hidden_features):
      raise UserError(f"config.model.hidden_features = {tuple(self.hidden_features)}: "
                      "every width must be a positive integer (() for no hidden layer).")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise UserError(f"config.model.dropout_rate = {self.dropout_rate}: use a value "
                      "in [0, 1).")
