"""optax optimiser and learning-rate schedule, both named in `config.optimizer`."""

from __future__ import annotations

import ml_collections
import optax

from mnist_jax.core.errors import UserError

SCHEDULES = ("constant", "cosine", "onecycle", "exponential")
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_schedule(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
                  num_epochs: int) -> optax.Schedule:
  """Learning rate as a function of the step; `cfg.learning_rate` is the peak."""
  total = steps_per_epoch * num_epochs
  lr = cfg.learning_rate
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "cosine":
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if warmup >= total:
      raise UserError(f"config.optimizer.warmup_epochs = {cfg.warmup_epochs} "
                      f"is not shorter than the run ({num_epochs} epochs): "
                      "shorten the warm-up.")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else lr, peak_value=lr,
        warmup_steps=warmup, decay_steps=total)
  if cfg.schedule == "onecycle":
    return optax.cosine_onecycle_schedule(transition_steps=total, peak_value=lr)
  if cfg.schedule == "exponential":
    # Decays by `decay_per_epoch` once per epoch, as in An et al. 2020.
    return optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                   decay_rate=cfg.decay_per_epoch, staircase=True)
  raise UserError(f"unknown schedule {cfg.schedule!r}: set "
                  f"config.optimizer.schedule to one of {', '.join(SCHEDULES)}.")


def make_optimizer(cfg: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """The optimiser `cfg.name` driven by `schedule`."""
  if cfg.name == "sgd":
    return optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  # Configs saved before b1 and b2 existed read base_config's (optax's) defaults
  # through run_format.from_saved.
  betas = dict(b1=cfg.b1, b2=cfg.b2)
  if cfg.name == "adam":
    return optax.adam(schedule, **betas)
  if cfg.name == "adamw":
    return optax.adamw(schedule, weight_decay=cfg.weight_decay, **betas)
  raise UserError(f"unknown optimizer {cfg.name!r}: set config.optimizer.name "
                  f"to one of {', '.join(OPTIMIZERS)}.")
