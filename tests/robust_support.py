"""Shared by the tests/test_robust_*.py files: a tiny MLP trained on random
images (no MNIST needed, so these tests also run without ../shared); its
`run_cli` (a command in a new process) serves every test file that needs one."""

import os
import pathlib
import subprocess
import sys

import numpy as np

from mnist_jax.core import data as data_lib

from train_worker import make_config

REPO = pathlib.Path(__file__).resolve().parents[1]

# 640 images, batch 32: 20 steps per epoch, one per call; saves every 7 steps,
# so a run keeps mid-epoch checkpoints (..., 21, 28, 35) and epoch ends (20, 40).
OVERRIDES = {"num_epochs": 2, "batch_size": 32, "checkpoint.every_steps": 7,
             "model.hidden_features": (16,), "steps_per_dispatch": 1}


def random_data(seed=0):
  """(train, test) Splits of random images and labels: training on them is
  deterministic, which is all that bitwise-resume tests need."""
  rng = np.random.default_rng(seed)

  def split(n):
    return data_lib.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                          rng.integers(0, 10, n).astype(np.int32))
  return split(640), split(200)


def tiny_config(**overrides):
  return make_config(dict(OVERRIDES, **overrides))


def run_python(*args, env_extra=None, timeout=300):
  """`python ARGS` from the repository root, with this checkout importable."""
  env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
  return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def run_cli(*args, **kwargs):
  return run_python("-m", "mnist_jax", *args, **kwargs)


def start_cli(*args, env_extra=None):
  """`python -m mnist_jax ARGS` started in the background."""
  env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
  return subprocess.Popen([sys.executable, "-m", "mnist_jax", *map(str, args)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
