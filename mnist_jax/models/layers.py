"""Small building blocks shared by the models."""

from __future__ import annotations

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError

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

  Written as reshape + reduce rather than nn.max_pool: the gradient of
  nn.max_pool (select_and_scatter) costs 67 ms per 128x28x28x32 batch on the
  project's CPUs, this form 5 ms (FIELD_NOTES), and the result is identical to
  nn.max_pool / nn.avg_pool with window=strides=(window, window), 'VALID'.
  """
  if kind == "none" or window == 1:
    return x_BxHxWxC
  b, h, w, c = x_BxHxWxC.shape
  ho, wo = h // window, w // window
  x = x_BxHxWxC[:, :ho * window, :wo * window, :]  # VALID: drop the ragged edge
  x = x.reshape(b, ho, window, wo, window, c)
  if kind == "max":
    return x.max(axis=(2, 4))
  if kind == "avg":
    return x.mean(axis=(2, 4))
  raise UserError(f"unknown pooling {kind!r}: use one of {', '.join(POOLINGS)}.")


def count_params(params) -> int:
  """Total number of scalars in a parameter tree."""
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


CONV_IMPLS = ("xla", "im2col")


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """(low, high) padding of 'SAME': output ceil(size / stride), extra at the high end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def im2col_conv(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array,
                stride: int) -> jax.Array:
  """'SAME' convolution as k*k shifted slices concatenated on channels, one matmul.

  The same function as lax.conv_general_dilated (NHWC, HWIO); its gradients are
  a matmul plus slice-adds instead of XLA's convolution gradients, which run far
  below matmul speed on some CPUs (docs/performance.md has the measurements).
  """
  b, h, w, c = x_BxHxWxC.shape
  k, f = kernel_KxKxCxF.shape[0], kernel_KxKxCxF.shape[-1]
  (ht, hb), (wl, wr) = same_padding(h, k, stride), same_padding(w, k, stride)
  x = jnp.pad(x_BxHxWxC, ((0, 0), (ht, hb), (wl, wr), (0, 0)))
  oh, ow = -(-h // stride), -(-w // stride)
  views = [x[:, i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride]
           for i in range(k) for j in range(k)]  # row-major (i, j): matches HWIO
  patches_NxKKC = jnp.concatenate(views, axis=-1).reshape(b * oh * ow, k * k * c)
  out_NxF = patches_NxKKC @ kernel_KxKxCxF.reshape(k * k * c, f)
  return out_NxF.reshape(b, oh, ow, f)


class Conv(nn.Module):
  """A square 'SAME' nn.Conv with a choice of implementation; same params, same function.

  Parameters are `kernel` (k, k, C, F) and `bias` (F,) with nn.Conv's
  initialisers, so checkpoints and seeds carry over between `impl`s.
  """

  features: int
  kernel_size: int
  stride: int = 1
  impl: str = "xla"

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    k, c = self.kernel_size, x_BxHxWxC.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    if self.impl == "xla":
      y = jax.lax.conv_general_dilated(
          x_BxHxWxC, kernel, (self.stride, self.stride), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    elif self.impl == "im2col":
      y = im2col_conv(x_BxHxWxC, kernel, self.stride)
    else:
      raise UserError(f"unknown conv_impl {self.impl!r}: use one of "
                      f"{', '.join(CONV_IMPLS)}.")
    return y + bias


# Which modules are convolutions, for code that inspects a model (parameter and
# multiply-add counts, feature-map capture): weight-sharing ones, then all.
SHARED_CONVS = (nn.Conv, Conv)
CONV_MODULES = SHARED_CONVS + (nn.ConvLocal,)
