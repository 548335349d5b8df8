"""mnist_jax: handwritten digit recognition on MNIST with JAX, Flax (linen) and optax.

Data flows one way: config -> data -> model -> train step -> evaluation -> run
directory (config.json, metrics.jsonl, checkpoints) -> tables and plots.
"""

from mnist_jax.core import runtime as _runtime
from mnist_jax.core.errors import UserError

# Before anything imports JAX: XLA reads XLA_FLAGS once, when its first backend
# starts, and every entry point must compile the same convolutions (see
# runtime.use_eigen_cpu_convolutions).
_runtime.use_eigen_cpu_convolutions()

__all__ = ["UserError", "train_and_evaluate"]


def __getattr__(name):
  # Imported lazily so that `import mnist_jax` stays cheap (no JAX/TF import).
  if name == "train_and_evaluate":
    from mnist_jax.engine.loop import train_and_evaluate
    return train_and_evaluate
  raise AttributeError(name)
