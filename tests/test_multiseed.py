"""Seeds trained together under vmap equal their separate runs."""

import jax
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import data, run_dir
from mnist_jax.engine import multiseed
from mnist_jax.engine import loop as loop_lib, restore as restore_lib

from configs import cnn as cnn_config


def tiny_config():
  config = cnn_config.get_config()
  config.model.features = (4, 8)
  config.model.kernel_sizes = (3, 3)
  config.model.strides = (1, 1)
  config.model.activations = ("relu", "relu")
  config.model.pooling = ("max", "max")
  config.model.dense_features = (16,)
  config.model.dropout_rate = 0.25  # exercises each seed's dropout key
  config.num_epochs = 2
  config.batch_size = 32
  config.eval_batch_size = 50
  return config


def tiny_data():
  rng = np.random.default_rng(0)
  split = lambda n: data.Split(
      images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
      labels=rng.integers(0, 10, n).astype(np.int32))
  return split(128), split(70)


@pytest.mark.parametrize("steps_per_dispatch", [1, 3])  # 3: 4 steps = calls of 3 + 1
def test_each_seed_matches_its_separate_run(tmp_path, steps_per_dispatch):
  config, splits = tiny_config(), tiny_data()
  config.steps_per_dispatch = steps_per_dispatch
  seeds = [3, 7]
  together = multiseed.train_seeds(
      config, seeds, [str(tmp_path / f"v{s}") for s in seeds], data=splits,
      verbose=False)
  for seed, result in zip(seeds, together):
    alone_dir = str(tmp_path / f"alone{seed}")
    alone = loop_lib.train_and_evaluate(multiseed.seed_config(config, seed), alone_dir,
                                     data=splits, verbose=False)
    for key in ("train_loss", "test_loss", "test_accuracy", "step", "test_count"):
      assert result[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key
    assert run_dir.read_config(str(tmp_path / f"v{seed}")).seed == seed
    assert [m["epoch"] for m in run_dir.read_metrics(str(tmp_path / f"v{seed}"))] == [1, 2]
    restored = restore_lib.restore_state(str(tmp_path / f"v{seed}"), config)
    reference = restore_lib.restore_state(alone_dir, config)
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(reference.params)):
      np.testing.assert_allclose(a, b, atol=1e-5)
  assert together[0]["test_loss"] != together[1]["test_loss"]


def test_one_workdir_per_seed_is_required(tmp_path):
  with pytest.raises(UserError, match="one workdir per seed"):
    multiseed.train_seeds(tiny_config(), [0, 1], [str(tmp_path)], data=tiny_data())
