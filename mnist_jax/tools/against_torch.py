"""PyTorch's train step beside ours: `python -m mnist_jax benchmark --against torch`.

For each benchmark case, the PyTorch twin of its model (`torch_models`),
started from our initial weights, trained with the same optimiser, learning
rate schedule, loss and batch size on the same fixed batch, gathered by index
from the same training set as our step gathers it, and with the same
running loss / correct sums kept on the device (no host sync per step). Timed
in NCHW and in channels_last memory format, interleaved with our step in the
benchmark's rounds. PyTorch runs on as many threads as XLA:CPU's pool has
(`torch_threads`).

Needs the optional extra `pip install -e .[bench]` (torch==2.13.0, CPU build).
"""

from __future__ import annotations

import os
import time
from typing import List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from torch import nn

from mnist_jax.core.errors import UserError
from mnist_jax.core.optim import make_schedule
from mnist_jax.tools import torch_models


def torch_threads() -> int:
  """XLA:CPU's intra-op pool has one thread per core this process may run on
  (tsl::port::MaxParallelism, the affinity mask): PyTorch gets as many."""
  return len(os.sched_getaffinity(0))


def check_twin(config: ml_collections.ConfigDict) -> None:
  """Refuses a config whose twin would not do our step's work (before any compiling)."""
  if config.augment.enabled or config.ema_decay > 0:
    raise UserError("--against torch: the PyTorch twin trains without augmentation "
                    "and without an EMA of the weights; compare a config with "
                    "augment.enabled=False and ema_decay=0 (e.g. configs/speedrun.py, or "
                    "configs/cnn.py with --set augment.enabled=false).")
  torch_models.build_torch_model(config.model)


def torch_optimizer(cfg: ml_collections.ConfigDict, params) -> torch.optim.Optimizer:
  """optax's `make_optimizer(cfg)` in PyTorch (the same betas; eps is 1e-8 in both)."""
  betas = (cfg.b1, cfg.b2)
  if cfg.name == "adam":
    return torch.optim.Adam(params, lr=cfg.learning_rate, betas=betas)
  if cfg.name == "adamw":
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=betas,
                             weight_decay=cfg.weight_decay)
  return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum,
                         nesterov=cfg.nesterov)


class TorchCase:
  """A config's PyTorch twin with its optimiser, in one memory format."""

  def __init__(self, config: ml_collections.ConfigDict, our_state, train_images_NxHxWxC,
               train_labels_N, channels_last: bool, steps_per_epoch: int):
    self.format = torch.channels_last if channels_last else torch.contiguous_format
    self.model = torch_models.build_torch_model(config.model)
    torch_models.load_flax_params(self.model, our_state.params, our_state.batch_stats)
    self.model.to(memory_format=self.format).train()
    self.optimizer = torch_optimizer(config.optimizer, self.model.parameters())
    schedule = make_schedule(config.optimizer, steps_per_epoch, config.num_epochs)
    # Our schedule's values, looked up per step: the same learning rates.
    total_steps = steps_per_epoch * config.num_epochs
    self.lrs = np.asarray(jax.vmap(schedule)(jnp.arange(total_steps)))
    self.images_Nx1xHxW = torch.from_numpy(
        np.asarray(train_images_NxHxWxC).transpose(0, 3, 1, 2).copy())
    self.labels_N = torch.from_numpy(np.asarray(train_labels_N).astype(np.int64))
    self.idx_B = torch.arange(config.batch_size)
    self.label_smoothing = float(config.label_smoothing)
    self.loss_sum, self.correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
    self.step, self.train_s = 0, []  # type: int, List[float]

  def _call(self) -> None:
    for group in self.optimizer.param_groups:
      group["lr"] = float(self.lrs[min(self.step, len(self.lrs) - 1)])
    images = (self.images_Nx1xHxW[self.idx_B].float() / 255.0).contiguous(
        memory_format=self.format)
    labels = self.labels_N[self.idx_B]
    self.optimizer.zero_grad(set_to_none=True)
    logits = self.model(images)
    loss = nn.functional.cross_entropy(logits, labels,
                                       label_smoothing=self.label_smoothing)
    loss.backward()
    self.optimizer.step()
    with torch.no_grad():
      self.loss_sum += loss.detach() * labels.shape[0]
      self.correct += (logits.argmax(-1) == labels).sum()
    self.step += 1

  def run_round(self, steps: int) -> None:
    """Times `steps` steps after one warm-up step (PyTorch's CPU ops are synchronous)."""
    self._call()
    start = time.perf_counter()
    for _ in range(steps):
      self._call()
    self.train_s.append((time.perf_counter() - start) / steps)
