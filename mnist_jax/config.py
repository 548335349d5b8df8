"""Defaults shared by every config file, and checks that reject impossible ones.

Config files in configs/ start from `base_config()` and set `config.model`.
"""

from __future__ import annotations

import ml_collections

from mnist_jax.errors import UserError


def base_config() -> ml_collections.ConfigDict:
  """Training settings common to all models (the model block is left to callers)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_epochs = 10
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.label_smoothing = 0.0

  config.data = ml_collections.ConfigDict()
  config.data.train_split = "train"  # any tfds split string, e.g. "train[:10%]"
  config.data.test_split = "test"

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"  # sgd | adam | adamw
  config.optimizer.learning_rate = 1e-3  # peak rate of the schedule
  config.optimizer.momentum = 0.9  # sgd only
  config.optimizer.nesterov = False  # sgd only
  config.optimizer.weight_decay = 0.0  # adamw (decoupled) only
  config.optimizer.schedule = "cosine"  # constant | cosine | onecycle | exponential
  config.optimizer.warmup_epochs = 0.0  # cosine only
  config.optimizer.decay_per_epoch = 0.98  # exponential only

  # Checkpoints of the full train state; a run restarted on its workdir resumes.
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 200  # also at each epoch end; 0: epoch ends only
  config.checkpoint.max_to_keep = 3
  return config


def validate(config: ml_collections.ConfigDict) -> None:
  """Rejects settings that cannot train, with a sentence saying what to change."""
  for key in ("num_epochs", "batch_size", "eval_batch_size"):
    if int(config[key]) < 1:
      raise UserError(f"config.{key} = {config[key]}: it must be at least 1.")
  if config.optimizer.learning_rate <= 0:
    raise UserError(f"config.optimizer.learning_rate = "
                    f"{config.optimizer.learning_rate}: it must be positive.")
  if int(config.checkpoint.every_steps) < 0:
    raise UserError(f"config.checkpoint.every_steps = {config.checkpoint.every_steps}: "
                    "use 0 (epoch ends only) or a positive number of steps.")
  if int(config.checkpoint.max_to_keep) < 1:
    raise UserError(f"config.checkpoint.max_to_keep = {config.checkpoint.max_to_keep}: "
                    "keep at least 1 checkpoint.")
  if not 0.0 <= config.label_smoothing < 1.0:
    raise UserError(f"config.label_smoothing = {config.label_smoothing}: use a "
                    "value in [0, 1).")
