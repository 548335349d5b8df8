"""MNIST's split strings, read by tfds's own parser: checked before any data
is read, and turned into the examples tfds would read, in tfds's order.

A config names its data as tfds split strings ('train', 'train[:10%]',
'train[50000:]+test'). Checked here, a bad or empty one is refused before
the workdir is claimed, not when tfds reads the data. tfds's parser needs only the shard lengths of each
split, so it reads no data and does not import TensorFlow. (Not in config.py:
studies/spec.py imports config.py and must not import tfds, an import-linter
contract.)

Why tfds's parser and not a copy of it: importing
tfds (without TensorFlow) after jax/flax/optax/orbax costs 0.21-0.30 CPU s
(3 runs, 2-core CPU at load 15-17; 0.3-0.6 s wall when quieter), under a
tenth of the 3 s start-up budget (docs/performance.md, "Fixed costs of a
command"). One parser, kept by tfds, beats a copy that has to follow tfds's
grammar by hand.

Reading order is tfds's too: `as_dataset(shuffle_files=False)` reads each
shard a split string touches as one file, and several files through
`tf.data.Dataset.interleave(cycle_length=16, block_length=16)` (tfds 4.9.10,
core/reader.py), so 'train[:2%]+test[-500:]' alternates blocks of 16
examples. `interleave_order` repeats that order (tested against tf.data).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

from mnist_jax.core.errors import UserError

# The images in each shard of each split of MNIST (tfds 'mnist' 3.0.1, as
# prepared here): enough to check a config's splits before any data is read.
MNIST_SHARD_LENGTHS = {"train": (60_000,), "test": (10_000,)}
# tfds's ReadConfig defaults for interleave_cycle_length / _block_length.
CYCLE_LENGTH = 16
BLOCK_LENGTH = 16

ShardLengths = Mapping[str, Sequence[int]]  # split name -> examples per shard


def file_pieces(split: str, shard_lengths: ShardLengths = MNIST_SHARD_LENGTHS,
                key: str = "split") -> List[Tuple[str, slice]]:
  """[(split name, slice of its examples)]: one piece per file tfds reads for
  `split`, in tfds's order of files; a UserError (naming config field `key`)
  if tfds cannot parse it. Empty pieces are dropped."""
  infos = {name: tfds.core.SplitInfo(name=name, shard_lengths=list(lengths), num_bytes=0)
           for name, lengths in shard_lengths.items()}
  try:
    parts = tfds.core.ReadInstruction.from_spec(str(split)).to_absolute(infos)
  except (ValueError, NotImplementedError, AssertionError) as e:
    reason = [line for line in str(e).splitlines() if line.strip()][-1]
    raise UserError(f"{key} = {split!r} is not a split of MNIST ({reason}): use "
                    f"{', '.join(shard_lengths)} or a slice such as 'train[:5000]' or "
                    "'train[:10%]'.") from None
  pieces = []
  for part in parts:
    lengths = list(shard_lengths[part.splitname])
    from_, to = part.from_ or 0, sum(lengths) if part.to is None else part.to
    if to <= from_:  # tfds's reader would read 'train[50:10]' as 'train[50:]'
      continue
    starts = np.cumsum([0, *lengths])
    for file in shard_utils.get_file_instructions(from_, to, range(len(lengths)), lengths):
      skip = int(starts[file.filename]) + file.skip
      take = file.take if file.take >= 0 else lengths[file.filename] - file.skip
      pieces.append((part.splitname, slice(skip, skip + take)))
  return pieces


def split_size(split: str, key: str = "split",
               shard_lengths: ShardLengths = MNIST_SHARD_LENGTHS) -> int:
  """The number of images the split string `split` selects; a UserError
  (naming config field `key`) if tfds cannot parse it or it is empty."""
  count = sum(where.stop - where.start for _, where in file_pieces(split, shard_lengths, key))
  if count == 0:
    raise empty_split(split)
  return count


def empty_split(split: str) -> UserError:
  return UserError(f"split {split!r} of MNIST is empty: choose a non-empty split.")


def validate_splits(config: ml_collections.ConfigDict) -> None:
  """Checks config.data.train_split and test_split (see split_size), and that
  they share no image unless config.data.allow_test_overlap says it is meant
  (the validation split is carved from the train split, so it is covered)."""
  for key in ("train_split", "test_split"):
    split_size(config.data[key], f"config.data.{key}")
  shared = overlap(config.data.train_split, config.data.test_split)
  if shared and not config.data.get("allow_test_overlap", False):
    raise UserError(
        f"config.data.train_split = {config.data.train_split!r} shares {shared:,} "
        f"images with config.data.test_split = {config.data.test_split!r}: the test "
        "accuracy would not be held out (and a validation choice could use test "
        "images). Use disjoint splits, or set --config.data.allow_test_overlap=True "
        "if the overlap is meant.")


def overlap(a: str, b: str, shard_lengths: ShardLengths = MNIST_SHARD_LENGTHS) -> int:
  """How many images the split strings `a` and `b` both select."""
  def selected(split: str) -> Dict[str, np.ndarray]:
    masks = {name: np.zeros(sum(lengths), bool) for name, lengths in shard_lengths.items()}
    for name, where in file_pieces(split, shard_lengths):
      masks[name][where] = True
    return masks
  in_a, in_b = selected(a), selected(b)
  return int(sum((in_a[name] & in_b[name]).sum() for name in shard_lengths))


def interleave_order(lengths: Sequence[int], cycle_length: int = CYCLE_LENGTH,
                     block_length: int = BLOCK_LENGTH) -> np.ndarray:
  """Positions in the concatenation of pieces of these lengths, in the order of
  tf.data's deterministic interleave (its GetNext loop, step by step)."""
  starts = np.cumsum([0, *lengths])
  slots: List[Optional[List[int]]] = [None] * cycle_length  # [piece, offset]
  order, next_piece, cycle = [], 0, 0
  while next_piece < len(lengths) or any(slot is not None for slot in slots):
    slot = slots[cycle]
    if slot is None and next_piece < len(lengths):
      slots[cycle] = [next_piece, 0]  # opens the next file in this slot, stays
      next_piece += 1
      continue
    if slot is not None:
      piece, offset = slot
      take = min(block_length, lengths[piece] - offset)
      order.append(np.arange(starts[piece] + offset, starts[piece] + offset + take))
      slot[1] += take
      if take < block_length:  # the file ended inside this block (or at its start)
        slots[cycle] = None
    cycle = (cycle + 1) % cycle_length
  return np.concatenate(order) if order else np.zeros((0,), np.int64)
