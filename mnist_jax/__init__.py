"""mnist_jax: handwritten digit recognition on MNIST with JAX, Flax (linen) and optax.

Data flows one way: config -> data -> model -> train step -> evaluation -> run
directory (config.json, metrics.jsonl, checkpoints) -> tables and plots.

The names in `__all__` are the Python API (docs/api.md); each is a re-export
of the library function that the command line calls too. Call
`mnist_jax.setup_xla()` before JAX starts, as every command does, to compile
the same programs as the command line.
"""

import importlib

from mnist_jax.core.errors import UserError

# name -> (module, attribute), imported on first use so that `import mnist_jax`
# stays cheap (no JAX or TensorFlow import) and changes nothing.
_LAZY = {
    "setup_xla": ("mnist_jax.core.runtime", "setup_xla"),
    "load_mnist": ("mnist_jax.core.data", "load_mnist"),
    "load_config_file": ("mnist_jax.core.config", "load_config_file"),
    "train_and_evaluate": ("mnist_jax.engine.loop", "train_and_evaluate"),
    "train_runs": ("mnist_jax.engine.loop", "train_runs"),
    "restore_and_evaluate": ("mnist_jax.engine.restore", "restore_and_evaluate"),
    "load_run": ("mnist_jax.inference.trained", "load"),
    "TrainedModel": ("mnist_jax.inference.trained", "TrainedModel"),
    "load_digit": ("mnist_jax.inference.digits", "load_digit"),
    "predict_files": ("mnist_jax.inference.predict", "predict_files"),
    "evaluate_ensemble": ("mnist_jax.inference.ensemble", "evaluate_ensemble"),
    "load_experiment": ("mnist_jax.cli.experiments", "load_experiment"),
    "run_study": ("mnist_jax.studies.script", "run"),
}

__all__ = ["UserError", *_LAZY]


def __getattr__(name):
  if name not in _LAZY:
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
  module, attribute = _LAZY[name]
  return getattr(importlib.import_module(module), attribute)


def __dir__():
  return sorted(list(globals()) + list(_LAZY))
