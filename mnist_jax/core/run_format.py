"""Runs saved by older versions of the package, read as today's: the one place
that knows their formats.

config.json records the format it was written in (`format_version`); a run
without the number has version 1. Reading a run's config upgrades it one
version at a time to FORMAT_VERSION (`_UPGRADES`), then gives every field
of base_config() that the run lacks its default (a field added to
base_config keeps the old behaviour as its default, docs/extending.md);
a model key the run lacks is the model's attribute default, both when the
model is built and when configs are compared (`model_defaults`).
A change to what a saved config means adds a version: FORMAT_VERSION + 1
and the step that rewrites a config of the version before.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping

import ml_collections

from mnist_jax.core import config as config_lib
from mnist_jax.core.errors import UserError

FORMAT_VERSION = 2
VERSION_KEY = "format_version"
UNNUMBERED_VERSION = 1  # config.json without VERSION_KEY

# Running sums that mid-epoch checkpoints of older versions saved under other
# names (engine/checkpoint.py renames them on restore): old -> new.
RENAMED_SUMS = {"loss_sum": "loss", "correct": "accuracy"}

# CNN keys that the config files gained after version 1 runs were saved, each
# with the value those runs were built with.
_CNN_KEYS_ADDED_IN_VERSION_1 = {"padding": "same", "pool_before_norm": False}


def _cnn_keys_written_out(saved: Dict[str, Any]) -> Dict[str, Any]:
  """Version 1 -> 2: a CNN's model block holds the keys its config file has
  (the module is built from the block's keys alone)."""
  model = saved.get("model")
  if isinstance(model, dict) and model.get("name") == "cnn":
    saved = dict(saved, model={**_CNN_KEYS_ADDED_IN_VERSION_1, **model})
  return saved


# version v -> the step that rewrites a config of version v as version v + 1.
_UPGRADES: Dict[int, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    1: _cnn_keys_written_out}


def model_defaults(model: Any) -> Dict[str, Any]:
  """{attribute: default} of the model that the model block `model` names,
  in config.json's form: the values a run saved before the attribute was a
  config key was built with."""
  if not isinstance(model, Mapping):
    return {}
  from mnist_jax.core import models  # flax: only where configs are compared
  try:
    defaults = models.attribute_defaults(models.model_class(model.get("name")))
  except UserError:  # a model that cannot be found: building it says why
    return {}
  return json.loads(json.dumps(defaults))  # tuples as lists


def stamped(config_dict: Mapping[str, Any]) -> Dict[str, Any]:
  """A config as config.json stores it: with the format it is written in."""
  return {**config_dict, VERSION_KEY: FORMAT_VERSION}


def upgraded(saved: Mapping[str, Any]) -> Dict[str, Any]:
  """A saved config (config.json's dict, or a checkpoint's record of it) in
  today's format, without the version number: what a config file of today
  gives for the same run."""
  saved = dict(saved)
  version = saved.pop(VERSION_KEY, UNNUMBERED_VERSION)
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise UserError(f"the run's config has format_version {version!r}, which this "
                    f"version of mnist_jax (format {FORMAT_VERSION}) cannot read: "
                    "read it with the version that wrote it, or a newer one.")
  for step in range(version, FORMAT_VERSION):
    saved = _UPGRADES[step](saved)
  return saved


def from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A run's saved config in today's format, with base_config()'s default for
  every field it lacks: a run written before a field existed behaved as its
  default (e.g. `select` = 'last'), so readers can use `config.select` on any run."""
  config = config_lib.base_config()
  config.update(upgraded(saved))  # recursive: saved values win, block by block
  return config
