"""Devices and shardings.

Batches are sharded over every device (of every process) along a 'data'
mesh axis and the state is replicated; one device is just a mesh of size one.
Each process puts only its own rows of a batch on its devices.
"""

from __future__ import annotations

from typing import Dict

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mnist_jax.core.errors import UserError
from mnist_jax.engine.steps import Batch


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over all devices; Auto axes, as Explicit ones break Linen Dropout."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size: int, name: str = "batch_size") -> None:
  n = jax.device_count()
  if batch_size % n:
    works = [batch_size - batch_size % n, batch_size + n - batch_size % n]
    raise UserError(
        f"config.{name} = {batch_size} does not split evenly over {n} devices: "
        f"use a multiple of {n} (e.g. {works[0] or n} or {works[1]}).")


def _process_rows(x: np.ndarray, sharding: NamedSharding) -> np.ndarray:
  """The rows of the global array `x` that this process's devices hold, in order."""
  spans = {(idx[0].start or 0, x.shape[0] if idx[0].stop is None else idx[0].stop)
           for idx in sharding.addressable_devices_indices_map(x.shape).values()}
  return np.concatenate([x[a:b] for a, b in sorted(spans)])


def shard_batch(arrays: Dict[str, np.ndarray], mesh) -> Batch:
  """A global host batch -> arrays split along the batch axis over all devices.

  Every process holds the same global batch (MNIST fits in memory) and hands
  JAX only the rows its own devices hold.
  """
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(
              sharding, _process_rows(np.asarray(v), sharding), np.shape(v))
          for k, v in arrays.items()}


def shard_indices(idx: np.ndarray, mesh) -> jax.Array:
  """Batch indices (..., B): each batch split over the devices like `shard_batch`
  (leading axes, K steps and S seeds, whole on every device)."""
  idx = np.asarray(idx)
  spec = P(*([None] * (idx.ndim - 1)), "data")
  return jax.make_array_from_callback(idx.shape, NamedSharding(mesh, spec),
                                      lambda index: idx[index])


def replicate(tree, mesh):
  """The same value on every device; every process must pass equal values."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), np.shape(x)), tree)


def abstract_replicated(tree, mesh):
  """Shapes and dtypes of `tree` (arrays or jax.ShapeDtypeStruct), placed as
  `replicate` places values: a restore target that holds no data."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype,
                                                     sharding=sharding), tree)


def to_host(tree):
  """Device values -> numpy: the one way values come to the host.

  A replicated value is read from this process's first copy (no
  communication, so one process alone may ask); a value whose shards all
  live in this process is assembled from them; one split over several
  processes is gathered from all of them (process_allgather: every process
  must ask, in the same order).
  """
  return jax.tree.map(_leaf_to_host, tree)


def _leaf_to_host(x) -> np.ndarray:
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  if x.is_fully_addressable:
    return np.asarray(x)
  return multihost_utils.process_allgather(x, tiled=True)


def describe_devices() -> str:
  return (f"JAX {jax.__version__}, backend {jax.default_backend()}, "
          f"{jax.device_count()} device(s) in {jax.process_count()} process(es): "
          f"{', '.join(str(d) for d in jax.devices())}")
