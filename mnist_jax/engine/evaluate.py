"""Evaluation: sums of loss and correct predictions over every image of a split."""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax.core import data as data_lib
from mnist_jax.engine.mesh import check_batch_size, make_mesh, shard_batch, to_host
from mnist_jax.engine.state import TrainState, eval_params, variables
from mnist_jax.engine.steps import Batch


def eval_step(apply_fn, params, batch: Batch, batch_stats=None) -> Dict:
  """Sums of loss and correct predictions over the real (mask=1) examples."""
  logits = apply_fn(variables(params, batch_stats),
                    data_lib.scale_pixels(batch["image"]), train=False)
  mask = batch["mask"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"loss_sum": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask),
          "count": jnp.sum(mask)}


# apply_fn is static: one compilation per model, reused by every epoch's evaluation.
_jitted_eval_step = jax.jit(eval_step, static_argnums=0)


def evaluate(state: TrainState, split: data_lib.Split, batch_size: int,
             mesh=None) -> Dict[str, float]:
  """Loss and accuracy over every image of `split`, each counted once."""
  mesh = mesh or make_mesh()
  check_batch_size(batch_size, "eval_batch_size")
  sums = []
  for images, labels, mask in data_lib.eval_batches(split, batch_size):
    batch = shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
    sums.append(_jitted_eval_step(state.apply_fn, eval_params(state), batch,
                                  state.batch_stats))
  total = jax.tree.map(lambda *xs: float(np.sum(xs)), *to_host(sums))
  return {"loss": total["loss_sum"] / total["count"],
          "accuracy": total["correct"] / total["count"],
          "count": int(total["count"])}
