"""Shared fixtures: where the real MNIST files are, and a prepared tfds copy."""

from __future__ import annotations

import os
import pathlib

import pytest

# TensorFlow is only a tfds reader here: keep it quiet and off oneDNN.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def real_mnist_dir():
  """$MNIST_DIR, else ../shared/data/mnist beside the checkout, else None."""
  for candidate in (os.environ.get("MNIST_DIR"), SHARED_MNIST):
    if candidate and (pathlib.Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
      return str(candidate)
  return None


@pytest.fixture(scope="session")
def mnist_dir():
  path = real_mnist_dir()
  if path is None:
    pytest.skip("real MNIST files not found (set MNIST_DIR)")
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A prepared-data folder: $TFDS_DATA_DIR if set (reused between runs), else fresh."""
  return os.environ.get("TFDS_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def real_mnist(mnist_dir, tfds_dir):
  """(train, test) Splits of the real MNIST, prepared once per session."""
  from mnist_jax import data
  return data.load_mnist(mnist_dir, tfds_dir)


@pytest.fixture(scope="session")
def small_data(real_mnist, tmp_path_factory):
  """2,000 train and 1,000 test images of the real MNIST in an .npz, for workers."""
  import numpy as np
  train, test = real_mnist
  path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
  np.savez(path, train_images=train.images[:2000], train_labels=train.labels[:2000],
           test_images=test.images[:1000], test_labels=test.labels[:1000])
  return path
