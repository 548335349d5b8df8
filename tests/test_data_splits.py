"""core/splits.py: tfds's split strings cut into the files tfds reads, in the
order tf.data interleaves them (the examples themselves are checked against
tfds.as_dataset in test_data_cache.py)."""

import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import splits

# One split of three shards, so that shard boundaries and the 'shard' unit matter.
SHARDS = {"train": (20_000, 20_000, 20_000), "test": (10_000,)}


def test_pieces_are_cut_at_shard_boundaries_and_empty_ones_dropped():
  assert splits.file_pieces("train[19_990:40_010]+test[:0]", SHARDS) == [
      ("train", slice(19_990, 20_000)), ("train", slice(20_000, 40_000)),
      ("train", slice(40_000, 40_010))]
  assert splits.file_pieces("test[-10%:]+train[1shard]", SHARDS) == [
      ("test", slice(9_000, 10_000)), ("train", slice(20_000, 40_000))]
  assert splits.file_pieces("train[33.3%:33.4%]", SHARDS) == [
      ("train", slice(19_980, 20_000)), ("train", slice(20_000, 20_040))]


@pytest.mark.parametrize("spec,count", [
    ("train", 60_000), ("all", 70_000), ("train[:50000]", 50_000), ("train[-5000:]", 5_000),
    ("test[:1%]+train[:10]", 110)])
def test_split_size(spec, count):
  assert splits.split_size(spec, shard_lengths=SHARDS) == count


@pytest.mark.parametrize("spec", ["train[:0]", "train[50:10]", "test[10%:5%]"])
def test_empty_or_backwards_selects_nothing(spec):
  """tfds's reader would read 'train[50:10]' as 'train[50:]' (core/splits.py)."""
  with pytest.raises(UserError, match="of MNIST is empty"):
    splits.split_size(spec, shard_lengths=SHARDS)


@pytest.mark.parametrize("spec", ["", "train[", "train[::]", "train[5]", "train[:101%]",
                                  "train[:60001]", "all[:10]", "train test", "bogus"])
def test_what_tfds_rejects_is_one_line(spec):
  with pytest.raises(UserError) as error:
    splits.file_pieces(spec, SHARDS, key="config.data.train_split")
  assert "\n" not in str(error.value)
  assert str(error.value).startswith(f"config.data.train_split = {spec!r} is not a split")


@pytest.mark.parametrize("lengths", [[40, 7], [16, 16, 3], [1] * 20, [
    33, 16, 5, 48, 17, 2, 16, 9, 64, 1, 31, 15, 16, 32, 3, 8, 70, 16]])
def test_interleave_order_is_tf_datas(lengths):
  """The order tfds reads several files in (cycle 16, block 16), checked on tf.data itself."""
  import tensorflow as tf
  starts = np.cumsum([0] + lengths)
  files = tf.data.Dataset.from_tensor_slices((starts[:-1], np.array(lengths)))
  tf_order = files.interleave(lambda start, n: tf.data.Dataset.range(start, start + n),
                              cycle_length=16, block_length=16, deterministic=True,
                              num_parallel_calls=tf.data.AUTOTUNE)  # as tfds's reader
  assert splits.interleave_order(lengths).tolist() == [int(x) for x in tf_order]
