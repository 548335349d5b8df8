"""Models are picked by name from `config.model.name` through a small registry.

Each entry maps a name to a builder `model_config -> flax.linen.Module` that
validates the config and raises UserError for an impossible one.
"""

from __future__ import annotations

from typing import Callable, Dict

import flax.linen as nn
import ml_collections

from mnist_jax.core.data import NUM_CLASSES
from mnist_jax.core.errors import UserError

ModelBuilder = Callable[[ml_collections.ConfigDict], nn.Module]
_REGISTRY: Dict[str, ModelBuilder] = {}


def register(name: str):
  """Decorator adding a builder to the registry under `name`."""
  def add(builder: ModelBuilder) -> ModelBuilder:
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = builder
    return builder
  return add


def model_names():
  return sorted(_REGISTRY)


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """The Flax module that `model_config.name` names, built from the config."""
  name = model_config.get("name")
  if name not in _REGISTRY:
    raise UserError(f"unknown model {name!r}: set config.model.name to one of "
                    f"{', '.join(model_names())}.")
  classes = model_config.get("num_classes", NUM_CLASSES)
  if classes != NUM_CLASSES:
    raise UserError(f"config.model.num_classes = {classes}: MNIST has {NUM_CLASSES} "
                    f"classes (the digits 0-9); set it to {NUM_CLASSES}.")
  return _REGISTRY[name](model_config)


# Importing the modules registers their builders.
from mnist_jax.core.models import cnn as _cnn  # noqa: E402,F401
from mnist_jax.core.models import lenet5 as _lenet5  # noqa: E402,F401
from mnist_jax.core.models import mlp as _mlp  # noqa: E402,F401
from mnist_jax.core.models import simple_cnn as _simple_cnn  # noqa: E402,F401
