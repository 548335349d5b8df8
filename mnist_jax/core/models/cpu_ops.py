"""Convolution and max pooling as programs XLA:CPU runs fast, apart from the layers.

The implementations `config.model.conv_impl` chooses for layers.Conv (each
the same function as XLA's convolution, other programs) and max pooling with
its own gradient (layers.pool), with the convolution geometry they share
with the models (padding, output size). docs/decisions.md has the measurements.
"""

from __future__ import annotations

import functools
from typing import List, Tuple

import jax
import jax.numpy as jnp


def window_views(x_BxHxWxC: jax.Array, window: int):
  """The window*window strided views x[:, i::window, j::window] (row-major i, j),
  the ragged edge dropped (VALID).

  Written as the lax.slice ops that jnp's indexing gives for static shapes (the
  same program), because with a batch of symbolic size (inference/export.py)
  jnp's indexing becomes a gather, which TFLite's converter rejects.
  """
  b, h, w, c = x_BxHxWxC.shape
  limit = (b, h // window * window, w // window * window, c)
  x = (x_BxHxWxC if limit[1:3] == (h, w)
       else jax.lax.slice(x_BxHxWxC, (0, 0, 0, 0), limit))
  return [jax.lax.slice(x, (0, i, j, 0), limit, (1, window, window, 1))
          for i in range(window) for j in range(window)]


def max_of_views(x_BxHxWxC: jax.Array, window: int) -> jax.Array:
  """Max pooling written straightforwardly: the maximum of the strided views,
  differentiated by JAX (the reference `max_pool` is tested against)."""
  return functools.reduce(jnp.maximum, window_views(x_BxHxWxC, window))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x_BxHxWxC: jax.Array, window: int) -> jax.Array:
  """`max_of_views` with the same gradient, bit for bit, computed faster.

  JAX's own gradient of the views is the transpose of each strided slice, a
  pad with interior zeros, and XLA:CPU fuses the sum of those pads into one
  loop that recomputes every view's share at every input pixel, element by
  element: the largest single op of the speedrun's step (docs/decisions.md).
  Here the same shares (`_max_share`, in the same order) are computed once per
  output pixel and interleaved into the input's layout with a transpose.
  """
  return max_of_views(x_BxHxWxC, window)


def _max_share(x, z, y):
  """d max(x, y) / dx at z = max(x, y), as lax.max's JVP: 1, 0, or 1/2 on a tie."""
  one = jnp.ones_like(z)
  return jnp.where(x == z, one, jnp.zeros_like(z)) / jnp.where(y == z, one + one, one)


def _max_pool_fwd(x_BxHxWxC, window):
  return max_of_views(x_BxHxWxC, window), x_BxHxWxC


def _max_pool_bwd(window, x_BxHxWxC, g_BxHoxWoxC):
  views = window_views(x_BxHxWxC, window)
  running = [views[0]]  # running[k] = max(views[0..k]), as functools.reduce folds
  for view in views[1:]:
    running.append(jnp.maximum(running[-1], view))
  shares, g = [None] * len(views), g_BxHoxWoxC  # g: the cotangent of running[k]
  for k in range(len(views) - 1, 0, -1):
    shares[k] = g * _max_share(views[k], running[k], running[k - 1])
    g = g * _max_share(running[k - 1], running[k], views[k])
  shares[0] = g
  b, ho, wo, c = g_BxHoxWoxC.shape
  dx = jnp.stack(shares, axis=3).reshape(b, ho, wo, window, window, c)
  dx = dx.transpose(0, 1, 3, 2, 4, 5).reshape(b, ho * window, wo * window, c)
  _, h, w, _ = x_BxHxWxC.shape
  dx = jnp.pad(dx, ((0, 0), (0, h - ho * window), (0, w - wo * window), (0, 0)))
  # JAX's pads add +0.0 to each share, which turns a -0.0 share into +0.0.
  return (jnp.where(dx == 0, jnp.zeros_like(dx), dx),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# xla: lax.conv_general_dilated and its XLA gradients. im2col: patches + one
# matmul. xla_chunked: XLA's convolution and input gradient, with the kernel
# gradient summed over chunks of the batch (fast on XLA:CPU). taps: a sum over
# the kernel's taps of shifted inputs when not differentiated, xla_chunked when
# it is. auto: on the CPU backend taps for a one-channel input (the first layer)
# and xla_chunked otherwise; xla elsewhere. All the same function, same
# parameters.
CONV_IMPLS = ("auto", "xla", "im2col", "xla_chunked", "taps")


# 'SAME': zeros around the map, output ceil(size / stride). 'VALID': no zeros,
# the kernel stays inside the map, output floor((size - kernel) / stride) + 1.
PADDINGS = ("SAME", "VALID")


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """(low, high) padding of 'SAME': output ceil(size / stride), extra at the high end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv_padding(size: int, kernel: int, stride: int, padding: str) -> Tuple[int, int]:
  """(low, high) zeros that `padding` ('SAME' or 'VALID') adds to one side of the map."""
  return same_padding(size, kernel, stride) if padding == "SAME" else (0, 0)


def conv_output_size(size: int, kernel: int, stride: int, padding: str = "SAME") -> int:
  """Side of a convolution's output map; 0 when a 'VALID' kernel does not fit."""
  low, high = conv_padding(size, kernel, stride, padding)
  return max((size + low + high - kernel) // stride + 1, 0)


def kernel_taps(x_BxHxWxC: jax.Array, kernel_size: int, stride: int,
                padding: str = "SAME") -> List[jax.Array]:
  """The k*k views of the (padded) input that meet each tap of a k x k kernel,
  row-major (i, j) as HWIO's rows: view (i, j) at output (y, x) is the input at
  (y * stride + i, x * stride + j) of the padded map. Each is B x OH x OW x C.

  lax.slice, as in `window_views`: with a batch of symbolic size (export) jnp's
  indexing would become a gather, which TFLite's converter rejects."""
  b, h, w, c = x_BxHxWxC.shape
  k = kernel_size
  (ht, hb), (wl, wr) = (conv_padding(h, k, stride, padding),
                        conv_padding(w, k, stride, padding))
  x = jnp.pad(x_BxHxWxC, ((0, 0), (ht, hb), (wl, wr), (0, 0)))
  oh, ow = (conv_output_size(h, k, stride, padding),
            conv_output_size(w, k, stride, padding))
  return [jax.lax.slice(x, (0, i, j, 0),
                        (b, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                        (1, stride, stride, 1))
          for i in range(k) for j in range(k)]


def im2col_conv(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array,
                stride: int, padding: str = "SAME") -> jax.Array:
  """Convolution as k*k shifted slices concatenated on channels, one matmul.

  The same function as lax.conv_general_dilated (NHWC, HWIO); its gradients are
  a matmul plus slice-adds instead of XLA's convolution gradients, which run far
  below matmul speed on some CPUs (docs/decisions.md has the measurements).
  """
  k, c, f = kernel_KxKxCxF.shape[0], kernel_KxKxCxF.shape[2], kernel_KxKxCxF.shape[3]
  views = kernel_taps(x_BxHxWxC, k, stride, padding)
  b, oh, ow, _ = views[0].shape
  patches_NxKKC = jnp.concatenate(views, axis=-1).reshape(b * oh * ow, k * k * c)
  out_NxF = patches_NxKKC @ kernel_KxKxCxF.reshape(k * k * c, f)
  return out_NxF.reshape(b, oh, ow, f)


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

# Images per chunk of the kernel gradient in `xla_chunked_conv`. XLA:CPU's
# kernel gradient of a 3x3 'SAME' conv over 128 images of 14x14x32 -> 64 took
# 29 ms; as 16 sums over 8 images, 9 ms (docs/decisions.md has the sweep).
KERNEL_GRAD_CHUNK = 8


def xla_conv(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array,
             stride: int, padding: str = "SAME") -> jax.Array:
  """Convolution (NHWC, HWIO, 'SAME' or 'VALID') as XLA's convolution op."""
  return jax.lax.conv_general_dilated(x_BxHxWxC, kernel_KxKxCxF, (stride, stride),
                                      padding, dimension_numbers=_DIMENSIONS)


def one_call_per_member(fn):
  """`fn(*arrays)`, whose jax.vmap makes one call per member instead of one batched op.

  vmap of a convolution over its kernel (several seeds' models in one program,
  engine/loop.train_runs) becomes a grouped convolution, which XLA:CPU runs far
  slower than the same convolutions one by one (docs/decisions.md). The
  members' calls are unrolled at trace time and are independent, so XLA may
  run them side by side.
  """

  @jax.custom_batching.custom_vmap
  def call(*arrays):
    return fn(*arrays)

  @call.def_vmap
  def _per_member(axis_size, in_batched, *arrays):
    def member(i):
      return call(*[a[i] if batched else a for a, batched in zip(arrays, in_batched)])
    return jnp.stack([member(i) for i in range(axis_size)]), True

  return call


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def xla_chunked_conv(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array,
                     stride: int, padding: str = "SAME") -> jax.Array:
  """`xla_conv` whose kernel gradient is summed over chunks of the batch.

  Forward and input gradient are XLA's; the kernel gradient is XLA's too, but
  computed per chunk of KERNEL_GRAD_CHUNK images and summed, which XLA:CPU
  runs several times faster than one kernel gradient over the whole batch.
  Under jax.vmap every piece runs once per member (`one_call_per_member`).
  """
  return _conv_forward(x_BxHxWxC, kernel_KxKxCxF, stride, padding)


def _conv_forward(x, kernel, stride, padding):
  return one_call_per_member(lambda x, k: xla_conv(x, k, stride, padding))(x, kernel)


def conv_input_grad(x, kernel, g, stride, padding="SAME"):
  _, input_vjp = jax.vjp(lambda x: xla_conv(x, kernel, stride, padding), x)
  return input_vjp(g)[0]


def chunked_kernel_grad(x, kernel, g, stride, padding="SAME"):
  dkernel = jnp.zeros_like(kernel)
  for start in range(0, x.shape[0], KERNEL_GRAD_CHUNK):  # unrolled at trace time
    end = start + KERNEL_GRAD_CHUNK
    _, kernel_vjp = jax.vjp(lambda k: xla_conv(x[start:end], k, stride, padding),
                            kernel)
    dkernel = dkernel + kernel_vjp(g[start:end])[0]
  return dkernel


def _chunked_conv_fwd(x, kernel, stride, padding):
  return _conv_forward(x, kernel, stride, padding), (x, kernel)


def _chunked_conv_bwd(stride, padding, residuals, g_BxOHxOWxF):
  x, kernel = residuals
  per_member = lambda grad: one_call_per_member(
      functools.partial(grad, stride=stride, padding=padding))(x, kernel, g_BxOHxOWxF)
  return per_member(conv_input_grad), per_member(chunked_kernel_grad)


xla_chunked_conv.defvjp(_chunked_conv_fwd, _chunked_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def taps_conv(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array,
              stride: int, padding: str = "SAME") -> jax.Array:
  """Convolution as the sum over the kernel's k*k taps of (shifted input) x (that
  tap's C x F weights) when only its value is needed; `xla_chunked_conv` when
  it is differentiated.

  For an input of one channel (the first layer) each term is a broadcast
  multiply, and XLA fuses the sum, the bias and the pooling after it into one
  elementwise loop: evaluation of the default CNN +30% images/s, of the
  speedrun 2.7x. Under differentiation that loop would be recomputed by every
  consumer of the output, the pooling's gradient too (the speedrun's train step
  ran 12% slower), so the forward and the gradients there are
  `xla_chunked_conv`'s: training computes what `xla_chunked` does, bit for bit.
  """
  k = kernel_KxKxCxF.shape[0]
  views = kernel_taps(x_BxHxWxC, k, stride, padding)
  return functools.reduce(jnp.add, (view @ kernel_KxKxCxF[t // k, t % k]
                                    for t, view in enumerate(views)))


taps_conv.defvjp(_chunked_conv_fwd, _chunked_conv_bwd)


def resolve_conv_impl(impl: str, in_channels: int) -> str:
  """'auto' -> the fastest measured implementation for the current backend and
  a convolution of `in_channels` input channels."""
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "xla"
  return "taps" if in_channels == 1 else "xla_chunked"
