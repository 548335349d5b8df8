"""A training process for tests that need a fresh JAX (another device count) or a kill.

  python tests/train_worker.py WORKDIR DATA.npz OVERRIDES_JSON [RESTORE_FROM PARAMS_OUT.npz]

Trains configs/mlp.py with OVERRIDES (a flat {"a.b": value} JSON) on the
splits in DATA.npz; then, if given, restores RESTORE_FROM's checkpoint onto
this process's devices and writes its params to PARAMS_OUT.npz. The last
stdout line is a JSON summary.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import mlp  # noqa: E402
from mnist_jax.core import data as data_lib  # noqa: E402
from mnist_jax.engine import loop as loop_lib, mesh as mesh_lib, restore as restore_lib
from mnist_jax.core.errors import UserError  # noqa: E402


def make_config(overrides):
  config = mlp.get_config()
  for key, value in overrides.items():
    parent = config
    *path, leaf = key.split(".")
    for part in path:
      parent = parent[part]
    parent[leaf] = value
  return config


def load_data(path):
  arrays = np.load(path)
  return (data_lib.Split(arrays["train_images"], arrays["train_labels"]),
          data_lib.Split(arrays["test_images"], arrays["test_labels"]))


def main(workdir, data_path, overrides, restore_from=None, params_out=None):
  config = make_config(json.loads(overrides))
  summary = {"devices": jax.device_count()}
  try:
    mesh_lib.check_batch_size(jax.device_count() + 2)  # never a multiple of 3+ devices
  except UserError as e:
    summary["bad_batch_error"] = str(e)
  final = loop_lib.train_and_evaluate(config, workdir, data=load_data(data_path),
                                   verbose=False)
  summary["final"] = {k: v for k, v in final.items() if isinstance(v, (int, float))}
  if restore_from:
    state = restore_lib.restore_state(restore_from, config)
    leaves = jax.tree_util.tree_leaves_with_path(mesh_lib.to_host(state.params))
    np.savez(params_out, **{jax.tree_util.keystr(p): v for p, v in leaves})
  print(json.dumps(summary))


if __name__ == "__main__":
  main(*sys.argv[1:])
