"""MNIST through tensorflow-datasets, offline-first.

Where the data comes from, in order:
1. a prepared tfds copy in the tfds data dir (`TFDS_DATA_DIR`, tfds's default
   otherwise), used as it is;
2. else the four original `.gz` files in the MNIST folder (`--data_dir` or the
   `MNIST_DIR` environment variable), passed to tfds as its manual download
   directory, so tfds verifies their checksums while it prepares the copy.

Images come back as uint8 arrays of shape (N, 28, 28, 1) and labels as int32;
pixels are scaled to [0, 1] on the device, in the jitted step (see
`scale_pixels`), so that only bytes cross the host-device boundary.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional, Tuple

import numpy as np

from mnist_jax.core.errors import UserError

MNIST_DIR_ENV = "MNIST_DIR"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in host memory: uint8 images and int32 labels."""

  images: np.ndarray  # (N, 28, 28, 1) uint8
  labels: np.ndarray  # (N,) int32

  def __len__(self) -> int:
    return len(self.labels)


def scale_pixels(images_uint8):
  """uint8 pixels in [0, 255] -> float32 in [0, 1]; works on numpy and jax arrays."""
  return images_uint8.astype("float32") / 255.0


def resolve_mnist_dir(mnist_dir: Optional[str] = None) -> Optional[str]:
  """The folder with the original files: the argument, else $MNIST_DIR, else None."""
  return mnist_dir or os.environ.get(MNIST_DIR_ENV) or None


def _check_manual_dir(mnist_dir: Optional[str]) -> None:
  """Fail early, in one sentence, when the original files are not there."""
  if mnist_dir is None:
    raise UserError(
        "MNIST is not prepared and cannot be downloaded here: set "
        f"{MNIST_DIR_ENV} (or pass --data_dir) to a folder holding "
        + ", ".join(MNIST_FILES) + ".")
  if not os.path.isdir(mnist_dir):
    raise UserError(
        f"MNIST folder {mnist_dir!r} does not exist: point {MNIST_DIR_ENV} "
        "(or --data_dir) at a folder holding " + ", ".join(MNIST_FILES) + ".")
  missing = [f for f in MNIST_FILES
             if not os.path.isfile(os.path.join(mnist_dir, f))]
  if missing:
    raise UserError(
        f"MNIST folder {mnist_dir!r} lacks {', '.join(missing)}: put the four "
        "original files there (" + ", ".join(MNIST_FILES) + ").")


def _builder(data_dir: Optional[str]):
  import tensorflow_datasets as tfds  # Heavy import: only when data is needed.
  return tfds.builder("mnist", data_dir=data_dir)


def prepare(mnist_dir: Optional[str] = None, data_dir: Optional[str] = None):
  """Returns a prepared tfds `mnist` builder, preparing it offline if needed."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download.download_manager import (
      NonMatchingChecksumError)
  builder = _builder(data_dir)
  if builder.is_prepared():
    return builder
  mnist_dir = resolve_mnist_dir(mnist_dir)
  _check_manual_dir(mnist_dir)
  config = tfds.download.DownloadConfig(manual_dir=mnist_dir)
  try:
    builder.download_and_prepare(download_config=config)
  except NonMatchingChecksumError as e:
    found = re.search(r"downloaded to (\S+?),", str(e))
    path = found.group(1) if found else mnist_dir
    raise UserError(
        f"MNIST file {path} is corrupt (its checksum does not match the "
        "published one): replace it with the original file.") from None
  return builder


def load_split(split: str, mnist_dir: Optional[str] = None,
               data_dir: Optional[str] = None) -> Split:
  """Loads a whole split ('train', 'test', or a tfds slice like 'train[:1%]')."""
  import tensorflow_datasets as tfds
  builder = prepare(mnist_dir, data_dir)
  # A real batch size, not -1: batch_size=-1 aborts the process under
  # tfds.testing.mock_data (FIELD_NOTES), and chunks cost nothing here.
  dataset = builder.as_dataset(split=split, batch_size=10_000, shuffle_files=False)
  images, labels = [], []
  for batch in tfds.as_numpy(dataset):
    images.append(batch["image"])
    labels.append(batch["label"])
  if not labels:
    raise UserError(f"split {split!r} of MNIST is empty: choose a non-empty split.")
  return Split(images=np.concatenate(images).astype(np.uint8),
               labels=np.concatenate(labels).astype(np.int32))


def load_mnist(mnist_dir: Optional[str] = None, data_dir: Optional[str] = None,
               train_split: str = "train", test_split: str = "test"):
  """(train, test) splits of MNIST in host memory."""
  return (load_split(train_split, mnist_dir, data_dir),
          load_split(test_split, mnist_dir, data_dir))


def split_validation(train: Split, size: int) -> Tuple[Split, Optional[Split]]:
  """(train minus its last `size` images, those last images); size 0: (train, None).

  The split is fixed by tfds's order of the training set, whatever the seed,
  so every run and every hyper-parameter choice sees the same validation set.
  """
  size = int(size)
  if size == 0:
    return train, None
  if size >= len(train):
    raise UserError(f"config.data.validation_size = {size} leaves no training "
                    f"images out of {len(train)}: use a smaller validation split.")
  return (Split(train.images[:-size], train.labels[:-size]),
          Split(train.images[-size:], train.labels[-size:]))


def epoch_permutation(shuffle_key, epoch: int, num_examples: int) -> np.ndarray:
  """The order of the training set in `epoch`: a pure function of key and epoch.

  Deriving it from the epoch number (not from a running generator) makes the
  data order reproducible and lets a resumed run pick up the same order.
  """
  import jax
  key = jax.random.fold_in(shuffle_key, epoch)
  return np.asarray(jax.random.permutation(key, num_examples))


def eval_batches(split: Split, batch_size: int):
  """Yields (images, labels, mask) covering every example exactly once.

  The last batch is padded to `batch_size` (one compiled shape) and `mask` is 1
  for real examples, 0 for padding, so sums count each image once.
  """
  n = len(split)
  for start in range(0, n, batch_size):
    images = split.images[start:start + batch_size]
    labels = split.labels[start:start + batch_size]
    real = len(labels)
    mask = np.ones((batch_size,), np.float32)
    if real < batch_size:
      pad = batch_size - real
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
      labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
      mask[real:] = 0.0
    yield images, labels, mask
