"""Every config's train and eval programs lower for GPU and TPU (jax.export,
no accelerator needed), with the batch sharded over a 'data' mesh as in
training and no call back to the host in the program.

Shapes are abstract (jax.ShapeDtypeStruct): nothing is compiled or run.
"""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mnist_jax.core import config as config_lib
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.engine import state as state_lib
from mnist_jax.engine.steps import make_train_step, train_program, zero_sums

REPO = pathlib.Path(__file__).resolve().parents[1]
# The default CNN and the MLP in the fast tier, the other configs in the slow one.
CONFIGS = [name if name in ("cnn.py", "mlp.py") else pytest.param(name, marks=pytest.mark.slow)
           for name in sorted(p.name for p in (REPO / "configs").glob("*.py"))]
PLATFORMS = ("cuda", "tpu")
DEVICES = 4  # the mesh's size: a batch split four ways, as on a 4-chip host
TRAIN_IMAGES = 512  # the training set on the device; its size does not matter here
# custom_call targets that run Python on the host (jax.pure_callback,
# io_callback, jax.debug.print and their FFI forms).
HOST_CALLBACK = re.compile(r"custom_call\s*@(\w*(?:callback|host)\w*)", re.IGNORECASE)


def abstract_mesh():
  return jax.sharding.AbstractMesh((DEVICES,), ("data",),
                                   axis_types=(jax.sharding.AxisType.Auto,))


def placed(tree, mesh, spec=P()):
  """Shapes and dtypes of `tree`, each laid out over `mesh` by `spec`."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
      np.shape(x), x.dtype, sharding=NamedSharding(mesh, spec)), tree)


def host_callbacks(stablehlo: str):
  return sorted(set(HOST_CALLBACK.findall(stablehlo)))


def lower(jitted, args, platforms=PLATFORMS) -> str:
  """The StableHLO text of `jitted` exported for `platforms` (one program for
  all); fails the test if it does not lower there or calls back to the host."""
  try:
    exported = jax.export.export(jitted, platforms=platforms)(*args)
  except Exception as e:  # noqa: BLE001 -- whatever stops the lowering
    pytest.fail(f"does not lower for {platforms}: {type(e).__name__}: {e}"[:2000])
  text = exported.mlir_module()
  assert not host_callbacks(text), f"calls the host: {host_callbacks(text)}"
  assert exported.platforms == platforms
  assert exported.nr_devices == DEVICES
  return text


def train_arguments(config, mesh):
  """train_program's arguments as the loop passes them: state, sums, keys
  and training set replicated, the batch's indices split over 'data'."""
  state = jax.eval_shape(lambda: state_lib.create_train_state(config, jax.random.key(0), 10))
  k = config.steps_per_dispatch
  idx = jax.ShapeDtypeStruct(((k,) if k > 1 else ()) + (config.batch_size,), jnp.int32,
                             sharding=NamedSharding(mesh, P(*[None] * (k > 1), "data")))
  train = {"image": jax.ShapeDtypeStruct((TRAIN_IMAGES, 28, 28, 1), jnp.uint8),
           "label": jax.ShapeDtypeStruct((TRAIN_IMAGES,), jnp.int32)}
  keys = jax.eval_shape(lambda: (jax.random.key(1), jax.random.key(2)))  # dropout, augment
  sums = jax.eval_shape(lambda: zero_sums(make_train_step(config), state, config.batch_size,
                                          train))
  return (placed(state, mesh), placed(sums, mesh), placed(train, mesh),
          idx, *placed(keys, mesh))


def eval_program_and_arguments(config, mesh):
  """The evaluator's jitted batch function, with its model bound, and its
  arguments: eval variables replicated, the batch split over 'data'."""
  state = jax.eval_shape(lambda: state_lib.create_train_state(config, jax.random.key(0), 10))
  params, batch_stats = state_lib.eval_variables(placed(state, mesh))
  model = state.apply_fn.__self__  # as evaluate._eval_batch keys it
  n = config.eval_batch_size
  batch = placed({"image": jax.ShapeDtypeStruct((n, 28, 28, 1), jnp.uint8),
                  "label": jax.ShapeDtypeStruct((n,), jnp.int32),
                  "mask": jax.ShapeDtypeStruct((n,), jnp.float32)}, mesh, P("data"))
  program = jax.jit(lambda p, b, s: eval_lib._jitted_eval_batch("sums", model, False, p, b, s))
  return program, (params, batch, batch_stats)


@pytest.mark.parametrize("name", CONFIGS)
def test_train_and_eval_steps_lower_for_gpu_and_tpu(name):
  config = config_lib.load_config_file(f"configs/{name}")
  mesh = abstract_mesh()
  text = lower(train_program(config), train_arguments(config, mesh))
  assert '"data"' in text  # the mesh axis the batch is split over
  program, arguments = eval_program_and_arguments(config, mesh)
  lower(program, arguments)


def test_a_step_that_calls_the_host_does_not_pass():
  """A toy step with a jax.pure_callback (a CPU-only step) fails `lower`."""
  def step(x):
    doubled = jax.pure_callback(lambda v: np.asarray(v) * 2,
                                jax.ShapeDtypeStruct(x.shape, x.dtype), x)
    return doubled + 1

  x = jax.ShapeDtypeStruct((8,), jnp.float32, sharding=NamedSharding(abstract_mesh(), P("data")))
  for platform in PLATFORMS:
    with pytest.raises(pytest.fail.Exception, match=f"does not lower for .*{platform}"):
      lower(jax.jit(step), (x,), (platform,))


def test_host_callbacks_are_found_in_the_program_text():
  """The scan `lower` applies, on a program with a callback lowered for the
  CPU (where it lowers, and jax.export would refuse to serialise it)."""
  step = jax.jit(lambda x: jax.pure_callback(np.sin, jax.ShapeDtypeStruct((3,), jnp.float32), x))
  text = step.lower(jax.ShapeDtypeStruct((3,), jnp.float32)).as_text()
  assert host_callbacks(text)
  assert not host_callbacks(jax.jit(jnp.sin).lower(jnp.zeros(3)).as_text())
