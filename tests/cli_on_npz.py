"""`python -m mnist_jax ARGS...` with MNIST read from an .npz instead of tfds.

  python tests/cli_on_npz.py DATA.npz ARGS...

For CLI tests that must not pay for TensorFlow and the tfds read (~6 s a
process) or need no real data: `mnist_jax.core.data.load_mnist`
returns DATA.npz's train and test arrays (the config's split names are
ignored); everything else, from the flags to the `error: ...` line and the
exit status, is the real command line.

With $FULL_DISK_AT_STEP=N, orbax's writes of step N's checkpoint fail as on a
full disk (see `fill_disk_at`); with $STALL_BEFORE_SAVING=N the process stops
for good just before it saves step N's checkpoint (as tests/train_worker.py).
"""

import os
import runpy
import sys

# tests/ is sys.path[0] when this runs as a script.
from train_worker import STALL_ENV, load_data, stall_before_saving

from mnist_jax.core import data as data_lib  # train_worker put the repo on sys.path


FULL_DISK_ENV = "FULL_DISK_AT_STEP"
# What a tensorstore write into a full tmpfs raised inside orbax (measured).
FULL_DISK_ERROR = ("RESOURCE_EXHAUSTED: Error writing local file \"{path}\": Failed to "
                   "write 314 bytes to file 8: No space left on device [os_error_code='28']")


def fill_disk_at(step: int) -> None:
  """Every array write of step `step`'s checkpoint fails as on a full disk,
  where a real one fails: in orbax's background save threads, after the
  free-space check passed (another process filled the disk since)."""
  from orbax.checkpoint._src.serialization import serialization
  write = serialization.async_serialize_from_host

  async def write_or_fail(rslices, spec, **kwargs):
    if f"/{step}.orbax-checkpoint-tmp/" in str(spec):
      raise ValueError(FULL_DISK_ERROR.format(path=spec))
    return await write(rslices, spec, **kwargs)
  serialization.async_serialize_from_host = write_or_fail


def main(data_path, *args):
  if os.environ.get(FULL_DISK_ENV):
    fill_disk_at(int(os.environ[FULL_DISK_ENV]))
  if os.environ.get(STALL_ENV):
    stall_before_saving(int(os.environ[STALL_ENV]))
  splits = load_data(data_path)
  data_lib.load_mnist = lambda *a, **k: splits
  sys.argv = ["mnist_jax", *args]
  runpy.run_module("mnist_jax", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
