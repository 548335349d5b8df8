"""`python -m mnist_jax ARGS...` with MNIST read from an .npz instead of tfds.

  python tests/cli_on_npz.py DATA.npz ARGS...

For CLI tests that must not pay for TensorFlow and the tfds read (~6 s a
process, FIELD_NOTES) or need no real data: `mnist_jax.core.data.load_mnist`
returns DATA.npz's train and test arrays (the config's split names are
ignored); everything else, from the flags to the `error: ...` line and the
exit status, is the real command line.
"""

import runpy
import sys

from train_worker import load_data  # its folder is sys.path[0] when run as a script

from mnist_jax.core import data as data_lib  # train_worker put the repo on sys.path


def main(data_path, *args):
  splits = load_data(data_path)
  data_lib.load_mnist = lambda *a, **k: splits
  sys.argv = ["mnist_jax", *args]
  runpy.run_module("mnist_jax", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
