"""Helpers for tests that train in a separate process (tests/train_worker.py)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from mnist_jax.core import data, run_dir
from mnist_jax.engine import mesh as mesh_lib, restore as restore_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "train_worker.py"
CLI_ON_NPZ = REPO / "tests" / "cli_on_npz.py"
TIME_KEYS = ("epoch_time_s", "train_time_s", "train_images_per_s")


def load_small(path):
  arrays = np.load(path)
  return tuple(data.Split(arrays[f"{s}_images"], arrays[f"{s}_labels"])
               for s in ("train", "test"))


def start_worker(workdir, data_path, overrides, env_extra=None, args=()):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.Popen(
      [sys.executable, str(WORKER), str(workdir), str(data_path), json.dumps(overrides),
       *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.strip().splitlines()[-1])


def run_cli_on_npz(data_path, *args, timeout=300):
  """`python -m mnist_jax ARGS` with MNIST read from `data_path` (tests/cli_on_npz.py)."""
  command = [sys.executable, str(CLI_ON_NPZ), str(data_path), *map(str, args)]
  return subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, check=False)


def one_error_line(result, *fragments, status=2):
  """The single `error: ...` line of a command that failed as the CLI promises
  (exit `status`, no traceback), holding each of `fragments`."""
  assert result.returncode == status, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def checkpoint_steps(workdir):
  """The steps of the complete checkpoints on disk, oldest first. Orbax writes
  a save under a temporary name and renames it to the bare step when done."""
  folder = pathlib.Path(run_dir.checkpoint_dir(str(workdir)))
  return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())


def noise_splits(*sizes, seed=0):
  """One MNIST-shaped split of uniform-noise images and random labels per size."""
  rng = np.random.default_rng(seed)
  return tuple(data.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                          rng.integers(0, 10, n).astype(np.int32)) for n in sizes)


def write_noise_npz(path, train=2000, test=500, seed=0):
  """An .npz like tests' MNIST slices, of uniform noise with cycling labels."""
  rng = np.random.default_rng(seed)
  np.savez(path, train_images=rng.integers(0, 256, (train, 28, 28, 1), dtype=np.uint8),
           train_labels=(np.arange(train) % 10).astype(np.int32),
           test_images=rng.integers(0, 256, (test, 28, 28, 1), dtype=np.uint8),
           test_labels=(np.arange(test) % 10).astype(np.int32))
  return path


def without_times(lines):
  return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in lines]


def final_params(workdir):
  config = run_dir.read_config(workdir)
  return mesh_lib.to_host(restore_lib.restore_state(workdir, config).params)


def assert_same_bits(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.array_equal(x, y)
