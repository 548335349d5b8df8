"""MNIST through tensorflow-datasets, offline-first, decoded once.

Where the data comes from, in order:
1. a prepared tfds copy in the tfds data dir (`--data_dir`-less default:
   `TFDS_DATA_DIR`, else ~/tensorflow_datasets), version `TFDS_VERSION`;
2. else the four original `.gz` files in the MNIST folder (`--data_dir` or the
   `MNIST_DIR` environment variable), passed to tfds as its manual download
   directory, so tfds verifies their checksums while it prepares that copy.

tfds stays the source of truth, but reading it costs ~6.4 s in every process
(TensorFlow imported, the tfrecords decoded). So the
first load decodes each whole split once through tfds and keeps the uint8
arrays as .npy files in the user's cache (`runtime.cache_home()`/mnist/),
under a key that is the SHA-256 of the prepared copy's files: a changed or
damaged copy gets another key, is read through tfds again, and tfds
(TFRecord CRCs) reports the damage. The cached files carry their own SHA-256
(sha256.json, written last, the folder renamed into place), so a truncated
or altered cache is rebuilt, never used. Later loads check both hashes
(~0.06 s), memory-map the arrays and never import TensorFlow (only tfds's
split parser, core/splits.py). The cache lives outside the tfds folder so
that a read-only, shared tfds copy works too.

Images come back as uint8 arrays of shape (N, 28, 28, 1) and labels as int32;
pixels are scaled to [0, 1] on the device, in the jitted step (see
`scale_pixels`), so that only bytes cross the host-device boundary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mnist_jax.core import runtime
from mnist_jax.core.errors import UserError

MNIST_DIR_ENV = "MNIST_DIR"
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
# Pinned, so the cached arrays and tfds always mean the same copy
# (tests/test_data_cache.py checks that tfds still builds this version).
TFDS_VERSION = "3.0.1"
_CACHE_FORMAT = 1  # bump when the cached files change meaning

Arrays = Dict[str, Tuple[np.ndarray, np.ndarray]]  # split name -> (images, labels)
ShardLengths = Mapping[str, Sequence[int]]  # split name -> examples per shard
_MANIFEST = "sha256.json"  # the cached files' hashes, written last


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


def resolve_tfds_dir(data_dir: Optional[str] = None) -> str:
  """The tfds data dir: the argument, else tfds's own default ($TFDS_DATA_DIR or
  ~/tensorflow_datasets, as tfds.core.constants computes it)."""
  return data_dir or os.environ.get(TFDS_DATA_DIR_ENV) or os.path.join(
      os.path.expanduser("~"), "tensorflow_datasets")


def load_split(split: str, mnist_dir: Optional[str] = None,
               data_dir: Optional[str] = None) -> Split:
  """Loads a whole split ('train', 'test', or a tfds slice like 'train[:1%]')."""
  if _tfds_is_mocked():
    from mnist_jax.core import splits
    mocked = _read_tfds(prepare(mnist_dir, data_dir), split)
    if not len(mocked):
      raise splits.empty_split(split)
    return mocked
  shard_lengths, arrays = _prepared_arrays(mnist_dir, data_dir)
  return _select(split, shard_lengths, arrays)


def load_mnist(mnist_dir: Optional[str] = None, data_dir: Optional[str] = None,
               train_split: str = "train", test_split: str = "test"):
  """(train, test) splits of MNIST in host memory."""
  if _tfds_is_mocked():
    return (load_split(train_split, mnist_dir, data_dir),
            load_split(test_split, mnist_dir, data_dir))
  shard_lengths, arrays = _prepared_arrays(mnist_dir, data_dir)
  return (_select(train_split, shard_lengths, arrays),
          _select(test_split, shard_lengths, arrays))


def _select(split: str, shard_lengths: ShardLengths, arrays: Arrays) -> Split:
  """The examples a tfds split string names, in as_dataset's order (a view if one file)."""
  # tfds's parser (core/splits.py), imported only when a split is read, so
  # that `predict` (which reads no split) never pays for importing tfds.
  from mnist_jax.core import splits
  pieces = splits.file_pieces(split, shard_lengths)
  if not pieces:
    raise splits.empty_split(split)
  if len(pieces) == 1:  # a view of the memory-mapped file: nothing is read yet
    (name, where), = pieces
    return Split(np.asarray(arrays[name][0][where]), np.asarray(arrays[name][1][where]))
  order = splits.interleave_order([p.stop - p.start for _, p in pieces])
  images = np.concatenate([arrays[name][0][where] for name, where in pieces])
  labels = np.concatenate([arrays[name][1][where] for name, where in pieces])
  return Split(images[order], labels[order])


def _prepared_arrays(mnist_dir: Optional[str], data_dir: Optional[str]):
  """(shard lengths of each split, memory-mapped arrays of every split);
  prepares the tfds copy and decodes it once."""
  tfds_dir = resolve_tfds_dir(data_dir)
  version_dir = os.path.join(tfds_dir, "mnist", TFDS_VERSION)
  if not os.path.isdir(version_dir):
    prepare(mnist_dir, tfds_dir)
  shard_lengths, fingerprint = _inspect_copy(version_dir)
  cache_dir = os.path.join(runtime.cache_home(), "mnist",
                           f"{TFDS_VERSION}-{fingerprint[:20]}")
  arrays = _load_cache(cache_dir, shard_lengths)
  if arrays is None:
    _write_cache(cache_dir, _decode_with_tfds(version_dir, mnist_dir, tfds_dir, shard_lengths))
    arrays = _load_cache(cache_dir, shard_lengths)
    if arrays is None:
      raise UserError(f"the decoded MNIST arrays in {cache_dir} cannot be read "
                      "back: delete that folder and run again.")
  return shard_lengths, arrays


def _damaged(version_dir: str, reason: str) -> UserError:
  return UserError(f"the prepared MNIST copy {version_dir} is damaged ({reason}): "
                   f"delete {version_dir} and run again to prepare it anew from "
                   f"the original MNIST files (${MNIST_DIR_ENV} or --data_dir).")


def _inspect_copy(version_dir: str) -> Tuple[Dict[str, Tuple[int, ...]], str]:
  """(shard lengths of each split, SHA-256 of the copy's files), from its
  dataset_info.json; a missing or unreadable file is a damaged copy.

  The hash (0.02 s for MNIST's 22 MB) ties the cached arrays to these exact
  bytes: a copy changed in any byte gets another key, so tfds decodes it
  again and its record CRCs report the damage, never a stale cache.
  """
  try:
    with open(os.path.join(version_dir, "dataset_info.json")) as f:
      info = json.load(f)
    shard_lengths, names = {}, ["dataset_info.json", "features.json"]
    for split in info["splits"]:
      lengths = tuple(int(n) for n in split["shardLengths"])
      shard_lengths[split["name"]] = lengths
      names += [split["filepathTemplate"].format(
          DATASET="mnist", SPLIT=split["name"], FILEFORMAT=info["fileFormat"],
          SHARD_X_OF_Y=f"{i:05d}-of-{len(lengths):05d}") for i in range(len(lengths))]
  except FileNotFoundError:
    raise _damaged(version_dir, "dataset_info.json is missing") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise _damaged(version_dir, f"dataset_info.json is unreadable: {e}") from None
  digest = hashlib.sha256(f"{_CACHE_FORMAT}".encode())
  for name in names:
    try:
      digest.update(name.encode() + _file_sha256(os.path.join(version_dir, name)).encode())
    except FileNotFoundError:
      raise _damaged(version_dir, f"{name} is missing") from None
  return shard_lengths, digest.hexdigest()


def _file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_files(shard_lengths: ShardLengths):
  """{file name in the cache folder: (split name, 'images' or 'labels')}."""
  return {f"{name}_{kind}.npy": (name, kind) for name in shard_lengths
          for kind in ("images", "labels")}


def _load_cache(cache_dir: str, shard_lengths: ShardLengths) -> Optional[Arrays]:
  """{split: (images, labels)} memory-mapped, or None if the folder is absent,
  or a file in it is missing or differs from the hash written with it (a
  truncated or damaged cache is rebuilt, never used)."""
  try:
    with open(os.path.join(cache_dir, _MANIFEST)) as f:
      expected = json.load(f)
  except (OSError, ValueError):
    return None
  loaded = {}
  for file, (name, kind) in _cache_files(shard_lengths).items():
    path = os.path.join(cache_dir, file)
    try:
      if _file_sha256(path) != expected.get(file):
        return None
      loaded[name, kind] = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
      return None
  arrays = {}
  for name, lengths in shard_lengths.items():
    images, labels = loaded[name, "images"], loaded[name, "labels"]
    if (images.shape != (sum(lengths),) + IMAGE_SHAPE or images.dtype != np.uint8
        or labels.shape != (sum(lengths),) or labels.dtype != np.int32):
      return None
    arrays[name] = (images, labels)
  return arrays


def _write_cache(cache_dir: str, decoded: Mapping[str, Split]) -> None:
  """Writes the arrays and their hashes into a fresh folder, then renames it
  into place: a reader sees the whole folder or none of it."""
  parent = os.path.dirname(cache_dir)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".incomplete-", dir=parent)
  except OSError as e:
    raise UserError(f"cannot write the decoded MNIST arrays under {parent} "
                    f"({e.strerror}): set {runtime.CACHE_DIR_ENV} to a writable "
                    "folder.") from None
  try:
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; the arrays are not
    hashes = {}
    for file, (name, kind) in _cache_files(decoded).items():
      np.save(os.path.join(tmp, file), getattr(decoded[name], kind))
      hashes[file] = _file_sha256(os.path.join(tmp, file))
    with open(os.path.join(tmp, _MANIFEST), "w") as f:
      json.dump(hashes, f)
    if os.path.isdir(cache_dir):  # damaged (it failed its hashes): replace it
      shutil.rmtree(cache_dir, ignore_errors=True)
    try:
      os.rename(tmp, cache_dir)
    except OSError:
      pass  # another process renamed its copy first: the same bytes
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _tfds_is_mocked() -> bool:
  """True inside tfds.testing.mock_data (tests): then only tfds can answer,
  and nothing is read from or written to the cache."""
  builder_module = sys.modules.get("tensorflow_datasets.core.dataset_builder")
  as_dataset = getattr(getattr(builder_module, "DatasetBuilder", None), "as_dataset", None)
  return getattr(as_dataset, "__module__", "").endswith(".testing.mocking")


# The one path that imports tfds's reader and TensorFlow: preparing the copy
# and decoding it, once per copy.

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


def _check_writable(tfds_dir: str) -> None:
  """Preparing writes into tfds_dir: say so in one line if it cannot."""
  folder = os.path.abspath(tfds_dir)
  while not os.path.isdir(folder):
    folder = os.path.dirname(folder)
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=folder))
  except OSError:
    raise UserError(f"MNIST is not prepared in {tfds_dir} and {folder} is "
                    f"read-only: set {TFDS_DATA_DIR_ENV} to a writable folder, "
                    "or to one where MNIST is prepared.") from None


def prepare(mnist_dir: Optional[str] = None, data_dir: Optional[str] = None):
  """Returns a prepared tfds `mnist` builder, preparing it offline if needed."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download.download_manager import (
      NonMatchingChecksumError)
  data_dir = resolve_tfds_dir(data_dir)
  builder = tfds.builder(f"mnist:{TFDS_VERSION}", data_dir=data_dir)
  if builder.is_prepared():
    return builder
  mnist_dir = resolve_mnist_dir(mnist_dir)
  _check_manual_dir(mnist_dir)
  _check_writable(data_dir)
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


def _read_tfds(builder, split: str) -> Split:
  """A split (any tfds split string) decoded by tfds.as_dataset, in its order."""
  import tensorflow_datasets as tfds
  # A real batch size, not -1: batch_size=-1 aborts the process under
  # tfds.testing.mock_data, and chunks cost nothing here.
  dataset = builder.as_dataset(split=split, batch_size=10_000, shuffle_files=False)
  images, labels = [], []
  for batch in tfds.as_numpy(dataset):
    images.append(batch["image"])
    labels.append(batch["label"])
  if not labels:
    return Split(np.zeros((0,) + IMAGE_SHAPE, np.uint8), np.zeros((0,), np.int32))
  return Split(images=np.concatenate(images).astype(np.uint8),
               labels=np.concatenate(labels).astype(np.int32))


def _decode_with_tfds(version_dir: str, mnist_dir: Optional[str], tfds_dir: str,
                      shard_lengths: ShardLengths) -> Dict[str, Split]:
  """Every whole split through tfds; TensorFlow's read errors become one line."""
  import tensorflow as tf
  builder = prepare(mnist_dir, tfds_dir)
  try:
    # Smallest split first: a damaged copy fails sooner.
    decoded = {name: _read_tfds(builder, name)
               for name in sorted(shard_lengths, key=lambda n: sum(shard_lengths[n]))}
  except tf.errors.OpError as e:
    found = re.search(r"(corrupted|truncated) record at \d+", str(e))
    raise _damaged(version_dir, found.group(0) if found else type(e).__name__) from None
  for name, lengths in shard_lengths.items():
    if len(decoded[name]) != sum(lengths):
      raise _damaged(version_dir, f"{name} holds {len(decoded[name])} examples, "
                     f"not {sum(lengths)}")
  return decoded


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
