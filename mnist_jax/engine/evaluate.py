"""The one evaluator: sums of loss and correct predictions, or probabilities.

Every evaluation in the package goes through `_eval_batch`, one jitted
function with the model static: one compilation per model (and
output, and stacking), cached by jax.jit and reused by every epoch's end, by
every shifted or rotated test set of a run's robustness curves (30 in the
cpu preset) and by every ensemble member (tests/test_evaluate.py counts the
compilations). It evaluates one train state, or states stacked along a
leading axis (several seeds trained together, engine/loop.py) under
jax.vmap. Evaluation uses the weights and batch norm statistics that
`eval_variables` gives: the moving averages of both when the run keeps
them, else the live ones.

Sums, never means of means: a split's totals are the host sums of each
batch's sums (numpy's pairwise summation, in batch order), so a loss or
accuracy counts each image once, padding masked out.
"""

from __future__ import annotations

import functools
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mnist_jax.core import data as data_lib
from mnist_jax.engine.mesh import check_batch_size, make_mesh, shard_batch, to_host
from mnist_jax.engine.state import TrainState, eval_variables, variables
from mnist_jax.engine.steps import Batch


def _logits(apply_fn, params, batch: Batch, batch_stats):
  return apply_fn(variables(params, batch_stats),
                  data_lib.scale_pixels(batch["image"]), train=False)


def eval_step(apply_fn, params, batch: Batch, batch_stats=None) -> Dict:
  """Sums over the real (mask=1) examples, as the train step measures: loss,
  accuracy (correct predictions) and count. A key added here is written as
  test_<key> and val_<key> = sum / count with nothing else to edit."""
  logits_BxC = _logits(apply_fn, params, batch, batch_stats)
  mask_B = batch["mask"]
  losses_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, batch["label"])
  correct_B = (jnp.argmax(logits_BxC, -1) == batch["label"]).astype(jnp.float32)
  return {"loss": jnp.sum(losses_B * mask_B), "accuracy": jnp.sum(correct_B * mask_B),
          "count": jnp.sum(mask_B)}


def probabilities_step(apply_fn, params, batch: Batch, batch_stats=None) -> jax.Array:
  """Softmax outputs BxC of the batch's images (padding included)."""
  return jax.nn.softmax(_logits(apply_fn, params, batch, batch_stats))


_OUTPUTS = {"sums": eval_step, "probabilities": probabilities_step}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jitted_eval_batch(output: str, model, stacked: bool, params, batch: Batch,
                       batch_stats):
  """`output` ('sums' or 'probabilities') of one batch; stacked: per state of a
  leading axis of params and batch_stats (the batch shared)."""
  apply_fn = model.apply if isinstance(model, nn.Module) else model
  step = functools.partial(_OUTPUTS[output], apply_fn)
  if stacked:
    step = jax.vmap(step, in_axes=(0, None, 0))
  return step(params, batch, batch_stats)


def _eval_batch(output: str, apply_fn, stacked: bool, params, batch: Batch, batch_stats):
  """_jitted_eval_batch keyed by the model whose `apply` apply_fn is: equal
  models (one config) share one compilation, where two bound methods of
  equal modules would not (Python compares a method's __self__ by identity:
  each new train state compiled again, measured in tests/test_evaluate.py)."""
  model = getattr(apply_fn, "__self__", apply_fn)
  return _jitted_eval_batch(output, model, stacked, params, batch, batch_stats)


def batch_sums(state: TrainState, batch: Batch, stacked: bool = False) -> Dict:
  """eval_step of `state` (or of each stacked state) on one device batch."""
  params, batch_stats = eval_variables(state)
  return _eval_batch("sums", state.apply_fn, stacked, params, batch, batch_stats)


def _device_batches(split: data_lib.Split, batch_size: int, mesh):
  for images, labels, mask in data_lib.eval_batches(split, batch_size):
    yield shard_batch({"image": images, "label": labels, "mask": mask}, mesh)


def split_sums(state: TrainState, split: data_lib.Split, batch_size: int, mesh=None,
               stacked: bool = False) -> Dict[str, np.ndarray]:
  """eval_step's sums (loss, accuracy, count) over every image of `split`, on the host.

  float32 scalars, or with `stacked` arrays with one entry per state. Each
  state's totals are summed alone (a contiguous 1-D numpy sum), so a stacked
  state's are what its unstacked evaluation would sum from the same batches.
  """
  mesh = mesh or make_mesh()
  check_batch_size(batch_size, "eval_batch_size")
  host = to_host([batch_sums(state, b, stacked) for b in _device_batches(
      split, batch_size, mesh)])
  totals = {}
  for key in host[0]:
    per_batch = np.stack([sums[key] for sums in host])  # (batches,) or (batches, S)
    totals[key] = (np.sum(per_batch) if not stacked else np.array(
        [np.sum(np.ascontiguousarray(column)) for column in per_batch.T]))
  return totals


def metrics(totals: Dict) -> Dict[str, float]:
  """Each measurement of one state's split_sums per example (loss, accuracy,
  ...), and the count."""
  count = float(totals["count"])
  means = {k: float(v) / count for k, v in totals.items() if k != "count"}
  return dict(means, count=int(count))


def evaluate(state: TrainState, split: data_lib.Split, batch_size: int,
             mesh=None) -> Dict[str, float]:
  """Loss and accuracy of one state over every image of `split`, each counted once."""
  return metrics(split_sums(state, split, batch_size, mesh))


def probabilities(apply_fn, params, batch_stats, images_NxHxWx1: np.ndarray,
                  batch_size: int, mesh=None) -> np.ndarray:
  """Softmax outputs NxC for uint8 images, in batches of one compiled shape.

  `params` and `batch_stats` are a state's `eval_variables` (a pair: never
  the average of the weights with the live statistics).

  `batch_size` is rounded up to a multiple of the device count (the padding
  is dropped), so any number of images can be asked for. Every process gets
  all N rows, gathered from every device (of every process: all must call).
  """
  mesh = mesh or make_mesh()
  batch_size = -(-batch_size // jax.device_count()) * jax.device_count()
  split = data_lib.Split(images_NxHxWx1, np.zeros(len(images_NxHxWx1), np.int32))
  probs = []
  for images, labels, mask in data_lib.eval_batches(split, batch_size):
    batch = shard_batch({"image": images, "label": labels, "mask": mask}, mesh)
    probs_BxC = _eval_batch("probabilities", apply_fn, False, params, batch, batch_stats)
    probs.append(to_host(probs_BxC)[mask > 0])
  return np.concatenate(probs)


def confident_mistakes(labels_N: np.ndarray, probs_NxC: np.ndarray,
                       count: int) -> np.ndarray:
  """Indices of up to `count` misclassified examples, most confident first."""
  predicted_N = probs_NxC.argmax(-1)
  wrong = np.flatnonzero(predicted_N != labels_N)
  confidence = probs_NxC[wrong, predicted_N[wrong]]
  return wrong[np.argsort(-confidence, kind="stable")][:count]
