"""A convolutional network in stages: low-, mid- and high-level patterns.

Each stage is Conv(features, kernel, stride, padding) -> activation -> pooling,
with `batch_norm` a BatchNorm after every Conv and hidden Dense layer.
`pool_before_norm` orders a stage Conv -> pooling -> BatchNorm -> activation
instead: the norm and the activation then run on the pooled map, a quarter of
the values for 2x2 pooling (a different function when batch norm is on: its
statistics are those of the pooled map). Without batch norm, a stage of ReLU
and max pooling always pools first: the two commute, so the order changes no
value and no gradient (`CNN.pools_first`).
`padding` 'same' (the default) keeps a stride-1 map's size; 'valid' adds no
zeros, so a k x k kernel shrinks the map by k - 1 (fewer multiply-adds per
image, LeNet's and the speedrun's choice).
With `conv_type='local'` each Conv becomes a locally connected layer
(nn.ConvLocal): the same receptive fields and output shapes, but a separate
kernel at every output position, i.e. the CNN without weight sharing.
A convolution slides one small kernel (shared weights) over the whole map, so
it finds a local pattern wherever it is; stacking stages lets the first find
strokes and edges, the next parts of digits, the last the patterns that tell
the classes apart. The dense head then sees the flattened last map, whose size
is computed from the config, never written in.
"""

from __future__ import annotations

from typing import List, NamedTuple, Sequence, Union

import flax.linen as nn
import jax

from mnist_jax.core.errors import UserError
from mnist_jax.core.models import register
from mnist_jax.core.models.cpu_ops import CONV_IMPLS, conv_output_size
from mnist_jax.core.models.layers import POOLINGS, Conv, activation, batch_norm, pool

INPUT_SIZE = 28  # MNIST images are 28x28
CONV_TYPES = ("conv", "local")
PADDINGS = ("same", "valid")
# The attributes that hold one entry per stage; one entry applies to every stage.
PER_STAGE = ("features", "kernel_sizes", "strides", "activations", "pooling")


class Stage(NamedTuple):
  """One conv stage's settings."""
  features: int
  kernel_size: int
  stride: int
  activation: str
  pooling: str


@register("cnn")
class CNN(nn.Module):
  """Conv stages (one per entry of `features`) -> dense head -> logits."""

  features: Sequence[int] = (32, 64, 128)
  kernel_sizes: Sequence[int] = (3, 3, 3)
  strides: Sequence[int] = (1, 1, 1)
  activations: Sequence[str] = ("relu", "relu", "relu")
  pooling: Sequence[str] = ("max", "max", "max")
  pool_size: int = 2
  dense_features: Sequence[int] = (128,)
  dropout_rate: float = 0.0
  num_classes: int = 10
  conv_type: str = "conv"  # conv (shared weights) | local (nn.ConvLocal)
  conv_impl: str = "xla"  # cpu_ops.CONV_IMPLS: the same function, other programs
  batch_norm: bool = False
  padding: str = "same"  # same | valid, every stage
  pool_before_norm: bool = False  # conv -> pool -> norm -> act

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    x, padding = x_BxHxWxC, self.padding.upper()
    for i, (feat, k, s, act, kind) in enumerate(self.stages()):
      if self.conv_type == "local":
        x = nn.ConvLocal(feat, (k, k), strides=(s, s), padding=padding,
                         name=f"conv{i}")(x)
      else:
        x = Conv(feat, k, s, impl=self.conv_impl, padding=padding, name=f"conv{i}")(x)
      if self.pools_first(act, kind):
        x = activation(act)(self._normalise(pool(x, kind, self.pool_size), train, f"bn{i}"))
      else:
        x = pool(activation(act)(self._normalise(x, train, f"bn{i}")), kind, self.pool_size)
    x = x.reshape(x.shape[0], -1)  # flatten size follows from the config
    for j, width in enumerate(self.dense_features):
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.Dense(width, name=f"dense{j}")(x)
      x = nn.relu(self._normalise(x, train, f"dense_bn{j}"))
    if self.dropout_rate > 0:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="logits")(x)

  def pools_first(self, act: str, kind: str) -> bool:
    """Whether a stage runs conv -> pool -> norm -> activation: when
    `pool_before_norm` asks, and whenever it is the same function. Without
    batch norm, ReLU and max pooling commute: relu(max(a, b)) is max(relu(a),
    relu(b)), and the gradients agree bit for bit (both are zero wherever the
    window's maximum is not positive), so pooling first runs the activation
    and its gradient on a quarter of the values (2x2 pooling): +1-3% images/s
    for the default CNN's train step (docs/decisions.md)."""
    return self.pool_before_norm or (not self.batch_norm and act == "relu"
                                     and kind == "max")

  def _normalise(self, x: jax.Array, train: bool, name: str) -> jax.Array:
    return batch_norm(train, name)(x) if self.batch_norm else x

  def stages(self) -> List[Stage]:
    """Each conv stage's settings. A per-stage attribute with one entry gives
    it to every stage; the lists longer than one give the number of stages."""
    entries = {name: _entries(getattr(self, name)) for name in PER_STAGE}
    longer = {name: len(e) for name, e in entries.items() if len(e) != 1}
    if len(set(longer.values())) > 1:
      raise UserError(
          f"CNN config lists per-stage settings of different lengths ({longer}): "
          f"give each of {', '.join(PER_STAGE)} one entry per stage, or one entry "
          "for every stage.")
    count = next(iter(longer.values()), 1)
    return [Stage(*(e[i] if len(e) > 1 else e[0] for e in entries.values()))
            for i in range(count)]

  def feature_map_sizes(self, input_size: int = INPUT_SIZE) -> List[int]:
    """Side of the square feature map after each stage; rejects a map of size 0.

    'SAME' convolution with stride s gives ceil(n / s), 'VALID' with a k x k
    kernel floor((n - k) / s) + 1; non-overlapping pooling with window p gives
    floor(n / p).
    """
    sizes, n, p = [], input_size, self.pool_size
    for i, stage in enumerate(self.stages(), start=1):
      k, s, kind = stage.kernel_size, stage.stride, stage.pooling
      previous, n = n, conv_output_size(n, k, s, self.padding.upper())
      if n < 1:
        raise UserError(
            f"CNN stage {i}: a {k}x{k} 'valid' convolution does not fit the "
            f"{previous}x{previous} feature map: use smaller kernels, fewer stages "
            "or config.model.padding = 'same'.")
      if kind != "none" and n < p:
        raise UserError(
            f"CNN stage {i}: {p}x{p} {kind} pooling of a {n}x{n} feature map leaves "
            f"nothing (stride {s} after a {previous}x{previous} input): use smaller "
            "strides, a smaller pool_size or pooling 'none' in the later stages.")
      if kind != "none":
        n //= p
      sizes.append(n)
    return sizes

  def validate(self) -> None:
    """A UserError naming the attribute to change if the config cannot train."""
    _check_choice("padding", self.padding, PADDINGS)
    _check_choice("conv_type", self.conv_type, CONV_TYPES)
    _check_choice("conv_impl", self.conv_impl, CONV_IMPLS)
    stages = self.stages()
    sizes = {"features": tuple(stage.features for stage in stages),
             "kernel_sizes": tuple(stage.kernel_size for stage in stages),
             "strides": tuple(stage.stride for stage in stages),
             "dense_features": tuple(self.dense_features)}
    for name, values in sizes.items():
      if any(int(v) < 1 for v in values):
        raise UserError(f"config.model.{name} = {values}: every entry must be a "
                        "positive integer.")
    for stage in stages:
      if stage.pooling not in POOLINGS:
        raise UserError(f"unknown pooling {stage.pooling!r}: use one of "
                        f"{', '.join(POOLINGS)}.")
      activation(stage.activation)
    if self.pool_size < 1:
      raise UserError("config.model.pool_size must be at least 1.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise UserError(f"config.model.dropout_rate = {self.dropout_rate}: use a "
                      "value in [0, 1).")
    self.feature_map_sizes()


def _entries(value: Union[Sequence, int, str]) -> tuple:
  """A per-stage attribute as a tuple: a single value is one entry."""
  return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise UserError(f"config.model.{name} = {value!r}: use one of "
                    f"{', '.join(choices)}.")
