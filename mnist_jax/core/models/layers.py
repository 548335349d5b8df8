"""Small building blocks shared by the models."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.core.errors import UserError
from mnist_jax.core.models.cpu_ops import (CONV_IMPLS, im2col_conv, max_pool,
                                           resolve_conv_impl, taps_conv, xla_chunked_conv,
                                           xla_conv)

ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "silu": nn.silu,
}
POOLINGS = ("max", "avg", "none")


def activation(name: str):
  """The activation function called `name`."""
  if name not in ACTIVATIONS:
    raise UserError(f"unknown activation {name!r}: use one of "
                    f"{', '.join(sorted(ACTIVATIONS))}.")
  return ACTIVATIONS[name]


def pool(x_BxHxWxC: jax.Array, kind: str, window: int) -> jax.Array:
  """Non-overlapping `window`x`window` pooling with VALID padding.

  Max pooling is the elementwise maximum of the window*window strided views
  (`max_pool`), not nn.max_pool or a reshape + max: on the project's CPU the
  gradient of nn.max_pool (select_and_scatter) took 42-46 ms per 128x28x28x32
  batch, a reshape + max 4.5-17 ms (depending on what XLA fuses around it),
  and the strided views 2-3 ms (docs/decisions.md). The outputs are
  identical; gradients too, except that a tie inside a window splits its
  gradient unevenly (ties happen between ReLU zeros, whose gradient is zero
  anyway).
  """
  if kind == "none" or window == 1:
    return x_BxHxWxC
  if kind == "max":
    return max_pool(x_BxHxWxC, window)
  if kind == "avg":
    b, h, w, c = x_BxHxWxC.shape
    ho, wo = h // window, w // window
    x = x_BxHxWxC[:, :ho * window, :wo * window, :]  # VALID: drop the ragged edge
    return x.reshape(b, ho, window, wo, window, c).mean(axis=(2, 4))
  raise UserError(f"unknown pooling {kind!r}: use one of {', '.join(POOLINGS)}.")


def batch_norm(train: bool, name: str) -> nn.BatchNorm:
  """The project's batch norm: running statistics in eval mode."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                      name=name)


def count_params(params) -> int:
  """Total number of scalars in a parameter tree."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


class Conv(nn.Module):
  """A square nn.Conv ('SAME' or 'VALID') with a choice of implementation; same
  params, same function.

  Parameters are `kernel` (k, k, C, F) and `bias` (F,) with nn.Conv's
  initialisers, so checkpoints and seeds carry over between `impl`s.
  """

  features: int
  kernel_size: int
  stride: int = 1
  impl: str = "xla"
  padding: str = "SAME"

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    k, c = self.kernel_size, x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    impl = resolve_conv_impl(self.impl, c)
    args = (x_BxHxWxC, kernel, self.stride, self.padding)
    if impl == "xla":
      y = xla_conv(*args)
    elif impl == "im2col":
      y = im2col_conv(*args)
    elif impl == "xla_chunked":
      y = xla_chunked_conv(*args)
    elif impl == "taps":
      y = taps_conv(*args)
    else:
      raise UserError(f"unknown conv_impl {self.impl!r}: use one of "
                      f"{', '.join(CONV_IMPLS)}.")
    return y + bias


# Which modules are convolutions, for code that inspects a model (parameter and
# multiply-add counts, feature-map capture): weight-sharing ones, then all.
SHARED_CONVS = (nn.Conv, Conv)
CONV_MODULES = SHARED_CONVS + (nn.ConvLocal,)
