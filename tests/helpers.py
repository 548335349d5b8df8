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


def without_times(lines):
  return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in lines]


def final_params(workdir):
  config = run_dir.read_config(workdir)
  return mesh_lib.to_host(restore_lib.restore_state(workdir, config).params)


def assert_same_bits(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.array_equal(x, y)
