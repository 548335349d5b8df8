"""A training process for tests that need a fresh JAX (another device count) or a kill.

  python tests/train_worker.py WORKDIR DATA.npz OVERRIDES_JSON [RESTORE_FROM PARAMS_OUT.npz]

Trains configs/mlp.py (or the config file named by the "config" key of
OVERRIDES) with OVERRIDES (a flat {"a.b": value} JSON) on the splits in
DATA.npz; then, if given, restores RESTORE_FROM's checkpoint onto this
process's devices and writes its params to PARAMS_OUT.npz. The last stdout
line is a JSON summary.

With $STALL_BEFORE_SAVING=N the process stops for good just before it saves
step N's checkpoint (earlier saves finish in the background): a test can
then kill it knowing that it never got past step N.
"""

import json
import os
import pathlib
import sys
import threading

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import mnist_jax  # noqa: E402
from mnist_jax.core import data as data_lib  # noqa: E402
from mnist_jax.core.config import apply_overrides, load_config_file  # noqa: E402
from mnist_jax.core.errors import UserError  # noqa: E402
from mnist_jax.engine import checkpoint  # noqa: E402
from mnist_jax.engine import loop as loop_lib, mesh as mesh_lib, restore as restore_lib  # noqa: E402
from mnist_jax.core import runtime  # noqa: E402

mnist_jax.setup_xla()  # the programs the CLI's runs compile
STALL_ENV = "STALL_BEFORE_SAVING"


def make_config(overrides):
  """The config file overrides["config"] (default configs/mlp.py), overridden."""
  overrides = dict(overrides)
  config = load_config_file(overrides.pop("config", "configs/mlp.py"))
  apply_overrides(config, overrides)
  return config


def load_data(path):
  arrays = np.load(path)
  return (data_lib.Split(arrays["train_images"], arrays["train_labels"]),
          data_lib.Split(arrays["test_images"], arrays["test_labels"]))


def stall_before_saving(step: int) -> None:
  """checkpoint.save of `step` says so on stderr and then waits forever."""
  save = checkpoint.save

  def save_or_stall(mngr, at, *args, **kwargs):
    if at == step:
      print(f"stalled before saving step {at}", file=sys.stderr, flush=True)
      threading.Event().wait()
    return save(mngr, at, *args, **kwargs)

  checkpoint.save = save_or_stall


def main(workdir, data_path, overrides, restore_from=None, params_out=None):
  runtime.enable_compilation_cache()  # as the CLI's processes
  config = make_config(json.loads(overrides))
  if os.environ.get(STALL_ENV):
    stall_before_saving(int(os.environ[STALL_ENV]))
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
