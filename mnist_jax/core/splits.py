"""MNIST's split strings, checked with tfds's own parser before any data is read.

A config names its data as tfds split strings ('train', 'train[:10%]',
'train[50000:]+test'). A bad one used to surface only when tfds read the
data, after the workdir was claimed; an empty one never reached data.py's
"split is empty" message. tfds's parser needs only the size of each split,
which for MNIST is fixed, so the check reads no data and does not import
TensorFlow. (Not in config.py: studies/spec.py imports config.py and must not
import tfds, an import-linter contract.)
"""

from __future__ import annotations

import ml_collections
import tensorflow_datasets as tfds

from mnist_jax.core.errors import UserError

# The images in each split of MNIST (tfds 'mnist' 3.0.1).
MNIST_SPLIT_SIZES = {"train": 60_000, "test": 10_000}


def split_size(split: str, key: str = "split") -> int:
  """The number of images the split string `split` selects from MNIST; a
  UserError (naming config field `key`) if tfds cannot parse it or it is empty."""
  infos = {name: tfds.core.SplitInfo(name=name, shard_lengths=[size], num_bytes=0)
           for name, size in MNIST_SPLIT_SIZES.items()}
  try:
    parts = tfds.core.ReadInstruction.from_spec(str(split)).to_absolute(infos)
  except (ValueError, NotImplementedError, AssertionError) as e:
    reason = [line for line in str(e).splitlines() if line.strip()][-1]
    raise UserError(f"{key} = {split!r} is not a split of MNIST ({reason}): use "
                    "'train', 'test' or a slice such as 'train[:5000]' or "
                    "'train[:10%]'.") from None
  count = sum(max(0, (MNIST_SPLIT_SIZES[p.splitname] if p.to is None else p.to)
                  - (p.from_ or 0)) for p in parts)
  if count == 0:  # data.load_split's words, which it says only after loading
    raise UserError(f"split {split!r} of MNIST is empty: choose a non-empty split.")
  return count


def validate_splits(config: ml_collections.ConfigDict) -> None:
  """Checks config.data.train_split and test_split (see split_size)."""
  for key in ("train_split", "test_split"):
    split_size(config.data[key], f"config.data.{key}")
