"""Models are built from `config.model`: `name` picks a flax.linen Module and
every other key is one of its attributes, `Module(**config.model)`.

`name` is a built-in model ('mlp', 'cnn', 'lenet5', 'simple_cnn') or a user's
own module as 'module:Class' ('my_models:TinyResNet'), imported from the
working directory or from the installed packages. The contract of a model
class (docs/extending.md):
- a flax.linen Module, with a `num_classes` attribute if it takes one (set
  to 10 when the config has no such key), called as `model(x_BxHxWxC, train=bool)` on
  images scaled to [0, 1] and returning logits_BxC;
- optionally a `validate()` method that raises UserError for an impossible
  combination of attributes, so a bad config fails before any work.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Type

import flax.linen as nn
import ml_collections

from mnist_jax.core import user_code
from mnist_jax.core.data import NUM_CLASSES
from mnist_jax.core.errors import UserError

_REGISTRY: Dict[str, Type[nn.Module]] = {}
# Attributes flax gives every Module; a config key never sets them.
_FLAX_FIELDS = ("parent", "name")


def register(name: str):
  """Class decorator naming a built-in model: `config.model.name = name`."""
  def add(model_class: Type[nn.Module]) -> Type[nn.Module]:
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = model_class
    return model_class
  return add


def model_names():
  return sorted(_REGISTRY)


def model_class(name: Any) -> Type[nn.Module]:
  """The Module class that `config.model.name` names."""
  if isinstance(name, str) and ":" in name:
    return _user_class(name)
  if name not in _REGISTRY:
    raise UserError(f"unknown model {name!r}: set config.model.name to one of "
                    f"{', '.join(model_names())}, or to your own 'module:Class'.")
  return _REGISTRY[name]


def _user_class(name: str) -> Type[nn.Module]:
  module_name, _, class_name = name.partition(":")
  try:
    module = user_code.import_from_working_directory(module_name)
  except ImportError as e:
    raise UserError(f"config.model.name = {name!r}: cannot import {module_name!r} "
                    f"({e}): put {module_name.replace('.', '/')}.py in the working "
                    "directory or install it.") from None
  found = getattr(module, class_name, None)
  if not (isinstance(found, type) and issubclass(found, nn.Module)):
    raise UserError(f"config.model.name = {name!r}: {module_name} has no flax.linen "
                    f"Module named {class_name!r}.")
  return found


def attribute_names(model_class_: Type[nn.Module]) -> tuple:
  """The attributes a config can set: the class's dataclass fields, flax's own
  (parent, name) excepted."""
  return tuple(f.name for f in dataclasses.fields(model_class_)
               if f.init and f.name not in _FLAX_FIELDS)


def attribute_defaults(model_class_: Type[nn.Module]) -> Dict[str, Any]:
  """{attribute: default} for the attributes a config can set that have one."""
  return {f.name: f.default for f in dataclasses.fields(model_class_)
          if f.name in attribute_names(model_class_) and f.default is not dataclasses.MISSING}


def _as_attribute(value: Any) -> Any:
  """A config value as a module attribute: lists (config.json's form) as
  tuples, so that every attribute is hashable."""
  if isinstance(value, (list, tuple)):
    return tuple(_as_attribute(v) for v in value)
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return value


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """`Module(**config.model)` for the Module that `model_config.name` names,
  checked by its `validate()`; an impossible config is a UserError."""
  name = model_config.get("name")
  cls = model_class(name)
  attributes = {key: _as_attribute(value) for key, value in model_config.items()
                if key != "name"}
  known = attribute_names(cls)
  if "num_classes" in known:
    attributes.setdefault("num_classes", NUM_CLASSES)
  if attributes.get("num_classes", NUM_CLASSES) != NUM_CLASSES:
    raise UserError(f"config.model.num_classes = {attributes['num_classes']}: MNIST "
                    f"has {NUM_CLASSES} classes (the digits 0-9); set it to "
                    f"{NUM_CLASSES}.")
  unknown = sorted(set(attributes) - set(known))
  if unknown:
    raise UserError(f"config.model.{unknown[0]}: model {name!r} ({cls.__name__}) has "
                    f"no such attribute; its attributes are {', '.join(known)}.")
  try:
    model = cls(**attributes)
  except TypeError as e:  # an attribute without a default that the config lacks
    raise UserError(f"config.model: model {name!r} cannot be built ({e}): set the "
                    "attributes it needs in the config's model block.") from None
  if callable(getattr(model, "validate", None)):
    model.validate()
  return model


# Importing the modules registers their classes.
from mnist_jax.core.models import cnn as _cnn  # noqa: E402,F401
from mnist_jax.core.models import lenet5 as _lenet5  # noqa: E402,F401
from mnist_jax.core.models import mlp as _mlp  # noqa: E402,F401
from mnist_jax.core.models import simple_cnn as _simple_cnn  # noqa: E402,F401
