"""Defaults shared by every config file, and checks that reject impossible ones.

Config files in configs/ start from `base_config()` and set `config.model`.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import traceback
from typing import Any, Iterator, Mapping, Optional, Tuple

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

from mnist_jax.core.errors import UserError

# The checkout: config files (configs/) and study declarations (experiments/)
# are named relative to it.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# jax.random.key keeps a seed's low 32 bits (jax 0.10.2, x64 off: key(2**32) ==
# key(0), key(-1) == key(2**32 - 1), measured), so only these seeds are distinct.
MAX_SEED = 2**32 - 1


def base_config() -> ml_collections.ConfigDict:
  """Training settings common to all models (the model block is left to callers)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_epochs = 10
  config.batch_size = 128
  config.eval_batch_size = 1000
  # Train steps per host->device call (K steps run as one lax.scan); > 1 pays
  # the host's per-call work once per K steps, for models whose step is ~1 ms
  # (the MLP). Keep 1 for CNNs: on XLA:CPU a scan of convolution steps ran
  # 7x slower than separate calls (docs/decisions.md).
  config.steps_per_dispatch = 1
  config.label_smoothing = 0.0
  # The train step, 'module:function' (the module importable from the working
  # directory, or installed): a variant with its own measurements is named
  # here (docs/extending.md, "Adding a metric").
  config.train_step = "mnist_jax.engine.steps:train_step"
  # Evaluate with an exponential moving average of the weights, updated each
  # step as ema = d * ema + (1 - d) * params; 0 = off.
  config.ema_decay = 0.0
  # Which epoch a run reports and keeps for evaluation: 'last', or 'best_val'
  # (highest validation accuracy; needs data.validation_size > 0).
  config.select = "last"

  config.data = ml_collections.ConfigDict()
  config.data.train_split = "train"  # any tfds split string, e.g. "train[:10%]"
  config.data.test_split = "test"
  # The last N images of the training split (tfds's fixed order) are held out
  # for validation: every choice uses them, never the test set. 0 = none.
  config.data.validation_size = 0
  # A train split sharing images with the test split is refused (the test
  # accuracy would not be held out): True says the overlap is meant.
  config.data.allow_test_overlap = False

  # On-device augmentation of the training images, inside the jitted step
  # (mnist_jax/core/augment.py); per-image parameters drawn uniformly.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = False
  config.augment.rotation_deg = 0.0  # in [-r, r]
  config.augment.translate_frac = 0.0  # shift in [-t, t] * image size, x and y
  config.augment.scale_min = 1.0  # zoom factor in [scale_min, scale_max]
  config.augment.scale_max = 1.0
  config.augment.elastic_alpha = 0.0  # elastic distortion strength (pixels); 0 = off
  config.augment.elastic_sigma = 4.0  # smoothing of the displacement field (pixels)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # sgd | adam | adamw
  config.optimizer.learning_rate = 1e-3  # peak rate of the schedule
  config.optimizer.momentum = 0.9  # sgd only
  config.optimizer.nesterov = False  # sgd only
  config.optimizer.weight_decay = 0.0  # adamw (decoupled) only
  config.optimizer.b1 = 0.9  # adam, adamw: decay of the gradient's moving average
  config.optimizer.b2 = 0.999  # adam, adamw: the same for the squared gradient
  config.optimizer.schedule = "cosine"  # constant | cosine | onecycle | exponential
  config.optimizer.warmup_epochs = 0.0  # cosine only
  config.optimizer.decay_per_epoch = 0.98  # exponential only

  # Checkpoints of the full train state; a run restarted on its workdir resumes.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 200  # also at each epoch end; 0: epoch ends only
  config.checkpoint.max_to_keep = 3

  # TensorBoard events in the run directory (engine/metric_writer.py) besides
  # metrics.jsonl: the training loss every N steps, read from the sums the
  # loop keeps on the device (one host sync per N steps); 0 = epoch ends only.
  config.log_every_steps = 50
  # At the run's end, a grid of the N most confidently misclassified test
  # digits (one more pass over the test set); 0 = none.
  config.log_misclassified = 32
  # A jax.profiler trace of N training steps, from the second dispatch (the
  # first compiles and warms up), into <workdir>/profile/; 0 = off.
  config.profile_steps = 0
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects settings that cannot train, with a sentence saying what to change."""
  validate_no_none(config)
  validate_finite(config)
  validate_seed(config.seed)
  for key in ("num_epochs", "batch_size", "eval_batch_size", "steps_per_dispatch"):
    if key in config and int(config[key]) < 1:
      raise UserError(f"config.{key} = {config[key]}: it must be at least 1.")
  for key in ("log_every_steps", "log_misclassified", "profile_steps"):
    if int(config.get(key, 0)) < 0:
      raise UserError(f"config.{key} = {config[key]}: use 0 (off) or a positive number.")
  if config.optimizer.learning_rate <= 0:
    raise UserError(f"config.optimizer.learning_rate = "
                    f"{config.optimizer.learning_rate}: it must be positive.")
  for beta in ("b1", "b2"):
    value = config.optimizer[beta]
    if not 0.0 <= value < 1.0:
      raise UserError(f"config.optimizer.{beta} = {value}: Adam's decay rates "
                      "must lie in [0, 1).")
  if int(config.checkpoint.every_steps) < 0:
    raise UserError(f"config.checkpoint.every_steps = {config.checkpoint.every_steps}: "
                    "use 0 (epoch ends only) or a positive number of steps.")
  if int(config.checkpoint.max_to_keep) < 1:
    raise UserError(f"config.checkpoint.max_to_keep = {config.checkpoint.max_to_keep}: "
                    "keep at least 1 checkpoint.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise UserError(f"config.label_smoothing = {config.label_smoothing}: use a "
                    "value in [0, 1).")
  _validate_selection(config)
  if "augment" in config:
    validate_augment(config.augment)


def _leaves(tree: Mapping, prefix: str = "") -> Iterator[Tuple[str, Any]]:
  """('a.b', value) for every leaf of a nested mapping; tuples' items too."""
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(value, (tuple, list)):
      yield from ((f"{prefix}{key}[{i}]", v) for i, v in enumerate(value))
    else:
      yield f"{prefix}{key}", value


def validate_no_none(config: ml_collections.ConfigDict) -> None:
  """Rejects a field set to None (`--config.model.hidden_features=None`): no
  field takes None, and the model would fail on it deep in its code."""
  for key, value in _leaves(config.to_dict()):
    if value is None:
      field = key.split("[")[0]
      raise UserError(f"config.{field} = {config_value(config, field)} holds None: give "
                      "it a value, e.g. its config file's (a tuple field takes a tuple "
                      "such as '(128,)' or '()').")


def config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  """The value of field `dotted` ('model.hidden_features') of `config`."""
  node = config
  for key in dotted.split("."):
    node = node[key]
  return node


def validate_finite(config: ml_collections.ConfigDict, name: str = "config") -> None:
  """Rejects a NaN or infinite number anywhere in the config: a NaN learning
  rate or rotation would otherwise train, diverge and be blamed on the rate."""
  for key, value in _leaves(config.to_dict()):
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f"{name}.{key} = {value}: it must be a finite number.")


def validate_seed(seed: Any, label: Optional[str] = None) -> None:
  """Rejects a seed that JAX's PRNG would truncate into another run's seed;
  `label` names where it was given (default: config.seed)."""
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
    raise UserError(f"{label or f'config.seed = {seed}'}: use a whole number from 0 "
                    f"to {MAX_SEED} (2**32 - 1); JAX keeps only a seed's low 32 bits, "
                    "so a larger one would train another seed's run.")


def _validate_selection(config: ml_collections.ConfigDict) -> None:
  ema = config.ema_decay
  if not 0.0 <= ema < 1.0:
    raise UserError(f"config.ema_decay = {ema}: use a value in [0, 1) "
                    "(0 = no moving average).")
  size = config.data.validation_size
  if int(size) != size or size < 0:
    raise UserError(f"config.data.validation_size = {size}: use a whole number "
                    ">= 0 (0 = no validation split).")
  select = config.select
  if select not in ("last", "best_val"):
    raise UserError(f"config.select = {select!r}: use 'last' or 'best_val'.")
  if select == "best_val" and size == 0:
    raise UserError("config.select = 'best_val' needs a validation split: set "
                    "config.data.validation_size (e.g. 5000).")


def validate_augment(aug: ml_collections.ConfigDict) -> None:
  """Rejects augmentation settings that are negative or out of range."""
  validate_finite(aug, "config.augment")
  for key in ("rotation_deg", "translate_frac", "elastic_alpha"):
    if aug[key] < 0:
      raise UserError(f"config.augment.{key} = {aug[key]}: it must be >= 0 "
                      "(0 turns it off).")
  if aug.rotation_deg > 180:
    raise UserError(f"config.augment.rotation_deg = {aug.rotation_deg}: use at "
                    "most 180 degrees.")
  if aug.translate_frac >= 1:
    raise UserError(f"config.augment.translate_frac = {aug.translate_frac}: use "
                    "a fraction of the image size below 1 (e.g. 0.1).")
  if not 0 < aug.scale_min <= aug.scale_max:
    raise UserError(f"config.augment.scale_min/scale_max = {aug.scale_min}/"
                    f"{aug.scale_max}: use 0 < scale_min <= scale_max.")
  if aug.elastic_sigma <= 0:
    raise UserError(f"config.augment.elastic_sigma = {aug.elastic_sigma}: it "
                    "must be positive.")


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file; a relative path is taken from the repo root.
  Whatever goes wrong in the file is a UserError naming it (config_file_error)."""
  full = path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)
  if not os.path.isfile(full):
    raise UserError(f"config file {full} not found: give a path under configs/.")
  spec = importlib.util.spec_from_file_location("config_file", full)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
      raise no_get_config(full)
    return checked_config(full, module.get_config())
  except (Exception, SystemExit) as e:  # the file's own code: anything at all
    error = config_file_error(full, e)
    if error is None:
      raise
    raise error from None


def config_file_error(path: str, error: BaseException) -> Optional[UserError]:
  """An exception, or a sys.exit, that the config file's own code raised (at
  import or in get_config()), as one line naming the file and its line; None
  if `error` did not come from the file. config_flags re-raises a ValueError
  or TypeError of the file as another one: the file's is in the chain."""
  path = path.split(":", 1)[0]  # config_flags' 'file.py:argument'
  for e in _chain(error):
    lines = [frame.f_lineno for frame, _ in traceback.walk_tb(e.__traceback__)
             if os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path)]
    if not lines:
      continue
    if isinstance(e, SystemExit):
      return UserError(f"the config file {path} called sys.exit({e.code}) (line "
                       f"{lines[-1]}): a config file defines get_config(), which returns "
                       "the config (see configs/mlp.py).")
    what = " ".join(f"{type(e).__name__}: {e}".split())
    return UserError(f"the config file {path} raised {what} (line {lines[-1]}): correct "
                     "it, or give another config, e.g. --config configs/cnn.py.")
  return None


def no_get_config(path: str) -> UserError:
  return UserError(f"the config file {path} defines no get_config(): define one that "
                   "returns the config (see configs/mlp.py).")


def _chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, then the exceptions it was raised from or while handling."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def checked_config(path: str, config: Any) -> ml_collections.ConfigDict:
  """`config`, what get_config() of the file `path` returned, if it is a config."""
  if not isinstance(config, ml_collections.ConfigDict):
    what = "None" if config is None else f"a {type(config).__name__}"
    raise UserError(f"get_config() of the config file {path} returned {what}: it must "
                    "return an ml_collections.ConfigDict, e.g. base_config() with its "
                    "model set (see configs/mlp.py).")
  return config


def has_field(config: ml_collections.ConfigDict, dotted: str) -> bool:
  """Whether `dotted` ('optimizer.learning_rate') names a field of `config`."""
  node = config
  for key in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      return False
    node = node[key]
  return True


# Text to value, by the type of the field's default: the parsers that
# ml_collections' config_flags uses for `--config.FIELD=VALUE`.
_TEXT_PARSERS = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
                 float: flags.FloatParser(), tuple: tuple_parser.TupleParser()}


def split_text_lists(config: ml_collections.ConfigDict) -> None:
  """Each tuple field of `config` as `text_list` reads it."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      split_text_lists(value)
    elif isinstance(value, tuple) and text_list(value) != value:
      config[key] = text_list(value)


def text_list(value: tuple) -> tuple:
  """`value`, or its one text split at its commas.

  The tuple parser reads `--config.model.activations=gelu,gelu` and
  `=(relu, tanh)` (names without quotes, which Python's literal syntax does
  not read) as one text, ('gelu,gelu',); the list meant is ('gelu', 'gelu').
  """
  if len(value) != 1 or not isinstance(value[0], str) or "," not in value[0]:
    return value
  parts = (part.strip(" '\"") for part in value[0].strip("()[] ").split(","))
  return tuple(_literal_or_text(part) for part in parts if part)


def _literal_or_text(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _from_text(field_type: type, dotted: str, text: str) -> Any:
  if field_type is str:
    return text
  parser = _TEXT_PARSERS.get(field_type)
  if parser is None:
    raise UserError(f"config.{dotted} holds a {field_type.__name__}, which cannot be "
                    "set from text: set it in a config file.")
  try:
    value = parser.parse(text)
    return text_list(value) if field_type is tuple else value
  except ValueError:
    wanted = "true or false" if field_type is bool else f"a valid {field_type.__name__}"
    raise UserError(f"config.{dotted} = {text!r}: it is not {wanted}.") from None


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> None:
  """Sets dotted fields ('optimizer.learning_rate'); an unknown field is an error.

  A value given as text (a command line's 'FIELD=VALUE') for a field that is not
  a string is parsed as the field's type, as `--config.FIELD=VALUE` would be.
  """
  for dotted, value in overrides.items():
    if not has_field(config, dotted):
      raise UserError(f"config.{dotted}: the config has no such field; check its "
                      "spelling against the config file.")
    *parents, leaf = dotted.split(".")
    node = config
    for key in parents:
      node = node[key]
    if isinstance(value, str):
      value = _from_text(node.get_type(leaf), dotted, value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise UserError(f"config.{dotted} = {value!r}: {e}") from None
