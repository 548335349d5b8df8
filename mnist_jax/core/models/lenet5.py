"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), in the form trained here.

  C1 conv 6@5x5 -> S2 pool 2 -> C3 conv 16@5x5 'VALID' -> S4 pool 2
  -> C5 Dense 120 -> F6 Dense 84 -> Dense 10

Shapes: 28x28x1 -> 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 -> 120 -> 84 -> 10;
61,706 parameters (156 + 2,416 + 48,120 + 10,164 + 850).

Deviations from the paper, on purpose (all simpler, modern defaults):
- Input: the paper pads the 28x28 digit to 32x32 and uses a 'VALID' C1; here
  C1 is 'SAME' on 28x28, which is the same geometry (a 2-pixel zero border,
  28x28x6 out). The paper's background was -0.1 and ink 1.175; ours is [0, 1].
- Activations: ReLU by default (the paper: scaled tanh 1.7159 tanh(2a/3));
  `activation='tanh'` gets closer.
- S2/S4: max pooling by default (the paper: a 2x2 sum times a trainable
  coefficient plus a bias, then a sigmoid); `pooling='avg'` gets closer.
- C3 connects every input map to every output map (2,416 parameters); the
  paper's table connects 60 of the 96 pairs (1,516 parameters).
- C5 is a Dense layer on the flattened 5x5x16 map: on a 5x5 input the paper's
  5x5 convolution is exactly that.
- Output: Dense(10) logits with softmax cross-entropy, not the paper's
  Euclidean RBF units with fixed codes; trained with the config's optax
  optimiser, not stochastic diagonal Levenberg-Marquardt.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from mnist_jax.core.errors import UserError
from mnist_jax.core.models import register
from mnist_jax.core.models.layers import activation, pool


@register("lenet5")
class LeNet5(nn.Module):
  """C1-S2-C3-S4-C5-F6-output, sizes as in the paper."""

  activation: str = "relu"
  pooling: str = "max"
  num_classes: int = 10

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    act = activation(self.activation)
    x = act(nn.Conv(6, (5, 5), padding="SAME", name="c1")(x_BxHxWxC))
    x = pool(x, self.pooling, 2)  # s2: 14x14x6
    x = act(nn.Conv(16, (5, 5), padding="VALID", name="c3")(x))
    x = pool(x, self.pooling, 2)  # s4: 5x5x16
    x = x.reshape(x.shape[0], -1)
    x = act(nn.Dense(120, name="c5")(x))
    x = act(nn.Dense(84, name="f6")(x))
    return nn.Dense(self.num_classes, name="logits")(x)

  def validate(self) -> None:
    activation(self.activation)
    if self.pooling not in ("max", "avg"):
      raise UserError(f"config.model.pooling = {self.pooling!r}: LeNet-5 pools "
                      "twice; use 'max' or 'avg'.")
