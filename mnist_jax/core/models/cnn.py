"""A convolutional network in stages: low-, mid- and high-level patterns.

Each stage is Conv(features, kernel, stride, padding) -> activation -> pooling,
with `batch_norm` a BatchNorm after every Conv and hidden Dense layer.
`pool_before_norm` orders a stage Conv -> pooling -> BatchNorm -> activation
instead: the norm and the activation then run on the pooled map, a quarter of
the values for 2x2 pooling (a different function when batch norm is on: its
statistics are those of the pooled map; without it, max pooling and ReLU
commute).
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

from typing import List, Sequence

import flax.linen as nn
import jax
import ml_collections

from mnist_jax.core.config import added_model_value
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import register
from mnist_jax.core.models.layers import (CONV_IMPLS, POOLINGS, Conv, activation,
                                          batch_norm, conv_output_size, pool)

INPUT_SIZE = 28  # MNIST images are 28x28


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
  conv_impl: str = "xla"
  batch_norm: bool = False
  padding: str = "same"  # same | valid, every stage
  pool_before_norm: bool = False  # conv -> pool -> norm -> act

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, train: bool = False) -> jax.Array:
    x, padding = x_BxHxWxC, self.padding.upper()
    for i, (feat, k, s, act, kind) in enumerate(zip(
        self.features, self.kernel_sizes, self.strides, self.activations,
        self.pooling)):
      if self.conv_type == "local":
        x = nn.ConvLocal(feat, (k, k), strides=(s, s), padding=padding,
                         name=f"conv{i}")(x)
      else:
        x = Conv(feat, k, s, impl=self.conv_impl, padding=padding, name=f"conv{i}")(x)
      if self.pool_before_norm:
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

  def _normalise(self, x: jax.Array, train: bool, name: str) -> jax.Array:
    return batch_norm(train, name)(x) if self.batch_norm else x


def feature_map_sizes(cfg: ml_collections.ConfigDict,
                      input_size: int = INPUT_SIZE) -> List[int]:
  """Side of the square feature map after each stage; rejects a map of size 0.

  'SAME' convolution with stride s gives ceil(n / s), 'VALID' with a k x k
  kernel floor((n - k) / s) + 1; non-overlapping pooling with window p gives
  floor(n / p).
  """
  sizes, n, padding = [], input_size, conv_padding_of(cfg)
  for i, (k, s, kind) in enumerate(zip(cfg.kernel_sizes, cfg.strides, cfg.pooling),
                                   start=1):
    previous, n = n, conv_output_size(n, k, s, padding)
    if n < 1:
      raise UserError(
          f"CNN stage {i}: a {k}x{k} 'valid' convolution does not fit the "
          f"{previous}x{previous} feature map: use smaller kernels, fewer stages "
          "or config.model.padding = 'same'.")
    if kind != "none" and n < cfg.pool_size:
      raise UserError(
          f"CNN stage {i}: {cfg.pool_size}x{cfg.pool_size} {kind} pooling of a "
          f"{n}x{n} feature map leaves nothing (stride {s} after a "
          f"{sizes[-1] if sizes else input_size}x"
          f"{sizes[-1] if sizes else input_size} input): use smaller strides, "
          "a smaller pool_size or pooling 'none' in the later stages.")
    if kind != "none":
      n //= cfg.pool_size
    sizes.append(n)
  return sizes


CONV_TYPES = ("conv", "local")
PADDINGS = ("same", "valid")


def conv_padding_of(cfg: ml_collections.ConfigDict) -> str:
  """The CNN config's padding as lax spells it ('SAME' | 'VALID'); configs
  saved before the key existed are 'same' (config.ADDED_MODEL_DEFAULTS)."""
  return added_model_value(cfg, "padding").upper()


def pool_before_norm_of(cfg: ml_collections.ConfigDict) -> bool:
  """Whether each stage pools before its norm and activation; configs saved
  before the key existed did not (config.ADDED_MODEL_DEFAULTS)."""
  return bool(added_model_value(cfg, "pool_before_norm"))


def _validate(cfg: ml_collections.ConfigDict) -> None:
  if added_model_value(cfg, "padding") not in PADDINGS:
    raise UserError(f"config.model.padding = {cfg.padding!r}: use one of "
                    f"{', '.join(PADDINGS)}.")
  if cfg.get("conv_type", "conv") not in CONV_TYPES:
    raise UserError(f"config.model.conv_type = {cfg.conv_type!r}: use one of "
                    f"{', '.join(CONV_TYPES)}.")
  per_stage = ("features", "kernel_sizes", "strides", "activations", "pooling")
  lengths = {name: len(cfg[name]) for name in per_stage}
  if len(set(lengths.values())) != 1:
    raise UserError(
        "CNN config lists per-stage settings of different lengths "
        f"({lengths}): give each of {', '.join(per_stage)} one entry per stage.")
  for name in ("features", "kernel_sizes", "strides", "dense_features"):
    if any(int(v) < 1 for v in cfg[name]):
      raise UserError(f"config.model.{name} = {tuple(cfg[name])}: every entry "
                      "must be a positive integer.")
  for kind in cfg.pooling:
    if kind not in POOLINGS:
      raise UserError(f"unknown pooling {kind!r}: use one of {', '.join(POOLINGS)}.")
  for act in cfg.activations:
    activation(act)
  if cfg.pool_size < 1:
    raise UserError("config.model.pool_size must be at least 1.")
  if not 0.0 <= cfg.dropout_rate < 1.0:
    raise UserError(f"config.model.dropout_rate = {cfg.dropout_rate}: use a "
                    "value in [0, 1).")
  if cfg.get("conv_impl", "xla") not in CONV_IMPLS:
    raise UserError(f"config.model.conv_impl = {cfg.conv_impl!r}: use one of "
                    f"{', '.join(CONV_IMPLS)}.")
  feature_map_sizes(cfg)


@register("cnn")
def build_cnn(cfg: ml_collections.ConfigDict) -> CNN:
  _validate(cfg)
  return CNN(features=tuple(cfg.features), kernel_sizes=tuple(cfg.kernel_sizes),
             strides=tuple(cfg.strides), activations=tuple(cfg.activations),
             pooling=tuple(cfg.pooling), pool_size=cfg.pool_size,
             dense_features=tuple(cfg.dense_features),
             dropout_rate=cfg.dropout_rate, num_classes=cfg.num_classes,
             conv_type=cfg.get("conv_type", "conv"),
             # Runs saved before conv_impl existed have no such key.
             conv_impl=cfg.get("conv_impl", "xla"),
             batch_norm=cfg.get("batch_norm", False),
             padding=conv_padding_of(cfg).lower(),
             pool_before_norm=pool_before_norm_of(cfg))
