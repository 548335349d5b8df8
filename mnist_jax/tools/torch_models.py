"""The project's models rebuilt in PyTorch, for `benchmark --against torch`.

`build_torch_model(config.model)` is the twin of `build_model(config.model)`
for the `mlp` and the `cnn` (conv_type 'conv'): the same layers in the same
order, so the same parameter count, and with our weights copied in
(`load_flax_params`) the same logits (tests/test_against_torch.py). Needs the
optional extra `pip install -e .[bench]` (torch, CPU build).

Differences that do not change the function: images arrive NCHW (or NCHW
with channels_last memory) instead of NHWC, so the flatten before the dense
head orders the features channel-first and `load_flax_params` reorders the
first dense kernel's rows to match; 'SAME' padding is Conv2d's own where it
is symmetric (as a PyTorch user writes it) and an explicit zero pad where it
is not (a strided convolution's extra pixel goes at the end, as in XLA).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import ml_collections
import numpy as np
import torch
from torch import nn

from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cnn import INPUT_SIZE
from mnist_jax.core.models.cpu_ops import conv_padding

# flax's gelu is the tanh approximation.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU,
               "silu": nn.SiLU, "gelu": lambda: nn.GELU(approximate="tanh")}


def build_torch_model(cfg: ml_collections.ConfigDict) -> nn.Sequential:
  """The PyTorch twin of `build_model(cfg)`: NCHW float images in, logits out."""
  model = build_model(cfg)
  if cfg.name == "mlp":
    return _mlp(model)
  if cfg.name == "cnn" and model.conv_type == "conv":
    return _cnn(model)
  raise UserError(f"config.model.name {cfg.name!r} (conv_type "
                  f"{cfg.get('conv_type', 'conv')!r}) has no PyTorch twin: compare the "
                  "mlp or a cnn with conv_type 'conv' (e.g. configs/cnn.py).")


def _activation(name: str) -> nn.Module:
  if name not in ACTIVATIONS:
    raise UserError(f"activation {name!r} has no PyTorch twin: use one of "
                    f"{', '.join(sorted(ACTIVATIONS))}.")
  return ACTIVATIONS[name]()


def _dropout(rate: float) -> List[nn.Module]:
  return [nn.Dropout(rate)] if rate > 0 else []


def _batch_norm(cnn, kind, width: int) -> List[nn.Module]:
  # flax's momentum 0.9 keeps 90% of the old statistic; torch's 0.1 is the new share.
  return [kind(width, eps=1e-3, momentum=0.1)] if cnn.batch_norm else []


def _mlp(mlp) -> nn.Sequential:
  """The twin of an MLP module."""
  layers: List[nn.Module] = [nn.Flatten()]
  width = INPUT_SIZE * INPUT_SIZE
  for hidden in mlp.hidden_features:
    layers += [nn.Linear(width, hidden), _activation(mlp.activation)]
    layers += _dropout(mlp.dropout_rate)
    width = hidden
  return nn.Sequential(*layers, nn.Linear(width, mlp.num_classes))


def _cnn(cnn) -> nn.Sequential:
  """The twin of a CNN module."""
  layers: List[nn.Module] = []
  channels, size = 1, INPUT_SIZE
  for (feat, k, s, act, kind), out_size in zip(cnn.stages(), cnn.feature_map_sizes(),
                                               strict=True):
    low, high = conv_padding(size, k, s, cnn.padding.upper())
    if low != high:  # asymmetric: Conv2d pads both sides alike
      layers.append(nn.ZeroPad2d((low, high, low, high)))
      low = 0
    layers.append(nn.Conv2d(channels, feat, k, stride=s, padding=low))
    norm_act = _batch_norm(cnn, nn.BatchNorm2d, feat) + [_activation(act)]
    pooling = []
    if kind != "none" and cnn.pool_size > 1:
      pooling = [(nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(cnn.pool_size, cnn.pool_size)]
    layers += pooling + norm_act if cnn.pools_first(act, kind) else norm_act + pooling
    channels, size = feat, out_size
  layers.append(nn.Flatten())
  width = channels * size * size
  for hidden in cnn.dense_features:
    layers += _dropout(cnn.dropout_rate) + [nn.Linear(width, hidden)]
    layers += _batch_norm(cnn, nn.BatchNorm1d, hidden) + [nn.ReLU()]
    width = hidden
  return nn.Sequential(*layers, *_dropout(cnn.dropout_rate),
                       nn.Linear(width, cnn.num_classes))


def count_torch_params(model: nn.Module) -> int:
  """Trainable scalars (batch norm's running statistics are buffers, not counted)."""
  return sum(p.numel() for p in model.parameters())


def _as_tensor(array) -> torch.Tensor:
  return torch.from_numpy(np.array(array, np.float32))


# Our layers' names (models/cnn.py, flax's Dense_k in models/mlp.py) -> the
# position of the layer in the forward pass: conv0, bn0, conv1, bn1, ...,
# dense0, dense_bn0, ..., logits.
_LAYER_NAME = re.compile(r"(conv|bn|dense|dense_bn|Dense_|logits)(\d*)$")
_STAGE = {"conv": (0, 0), "bn": (0, 1), "dense": (1, 0), "Dense_": (1, 0),
          "dense_bn": (1, 1), "logits": (2, 0)}


def _call_order(name: str) -> Tuple[int, int, int]:
  match = _LAYER_NAME.match(name)
  if match is None:
    raise ValueError(f"no PyTorch twin for a layer named {name!r}")
  stage, after = _STAGE[match.group(1)]
  return stage, int(match.group(2) or 0), after


def load_flax_params(twin: nn.Sequential, params: Dict,
                     batch_stats: Optional[Dict] = None) -> None:
  """Copies our parameters into the twin, layer by layer in call order.

  Conv kernels HWIO -> OIHW, Dense kernels (in, out) -> (out, in); the first
  Dense after a convolution gets its rows reordered from our NHWC flatten
  order (h, w, c) to the twin's NCHW one (c, h, w).
  """
  modules = [m for m in twin if any(True for _ in m.parameters(recurse=False))]
  # Not dict order: flax's init keeps the call order, but a tree_map (an
  # optimiser step, a restore) returns the keys sorted, so bn0 before conv0.
  ours = sorted(params.items(), key=lambda item: _call_order(item[0]))
  if len(modules) != len(ours):
    raise ValueError(f"{len(ours)} layers with parameters in ours, {len(modules)} "
                     "in the twin")
  stats = batch_stats or {}
  last_conv = None
  with torch.no_grad():
    for module, (name, p) in zip(modules, ours):
      if isinstance(module, nn.Conv2d):
        module.weight.copy_(_as_tensor(p["kernel"]).permute(3, 2, 0, 1))
        last_conv = module
      elif isinstance(module, nn.Linear):
        kernel = np.asarray(p["kernel"])
        if last_conv is not None:
          c = last_conv.out_channels
          side = int(round((kernel.shape[0] // c) ** 0.5))
          kernel = kernel.reshape(side, side, c, -1).transpose(2, 0, 1, 3).reshape(
              kernel.shape[0], -1)
          last_conv = None
        module.weight.copy_(_as_tensor(kernel).T)
      else:  # batch norm
        module.weight.copy_(_as_tensor(p["scale"]))
        module.running_mean.copy_(_as_tensor(stats[name]["mean"]))
        module.running_var.copy_(_as_tensor(stats[name]["var"]))
      module.bias.copy_(_as_tensor(p["bias"]))
