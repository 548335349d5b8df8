"""Impossible config values are rejected before any work, in one clear line."""

import re

import jax
import numpy as np
import pytest

from mnist_jax import UserError, cli
from mnist_jax.core import config as config_lib, splits
from mnist_jax.core.models import build_model

from helpers import one_error_line
from robust_support import tiny_config


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.learning_rate", float("nan"), "learning_rate = nan: it must be a finite"),
    ("optimizer.learning_rate", float("inf"), "learning_rate = inf: it must be a finite"),
    ("optimizer.momentum", float("nan"), "momentum = nan"),
    ("augment.rotation_deg", float("nan"), "rotation_deg = nan: it must be a finite"),
    ("augment.scale_max", float("inf"), "scale_max = inf"),
    ("seed", 2**40, r"seed = 1099511627776: use a whole number from 0 to 4294967295"),
    ("seed", -1, "seed = -1: use a whole number"),
])
def test_non_finite_numbers_and_truncated_seeds_are_rejected(key, value, message):
  with pytest.raises(UserError, match=message):
    config_lib.validate(tiny_config(**{key: value}))


def test_the_largest_seed_is_accepted_and_distinct_from_seed_zero():
  """The seed range is JAX's: key(2**32) == key(0), key(2**32 - 1) != key(0)."""
  config_lib.validate(tiny_config(seed=config_lib.MAX_SEED))
  data = jax.random.key_data
  assert np.array_equal(data(jax.random.key(config_lib.MAX_SEED + 1)),
                        data(jax.random.key(0)))
  assert not np.array_equal(data(jax.random.key(config_lib.MAX_SEED)),
                            data(jax.random.key(0)))


@pytest.mark.parametrize("key, value, message", [
    ("model.num_classes", 5, "num_classes = 5: MNIST has 10 classes"),
    ("model.hidden_features", (0,), r"hidden_features = \(0,\): every width must be"),
    ("model.hidden_features", (16, 0), "every width must be a positive integer"),
    ("model.dropout_rate", 1.0, "dropout_rate = 1.0"),
])
def test_impossible_model_values_are_rejected_by_the_builder(key, value, message):
  with pytest.raises(UserError, match=message):
    build_model(tiny_config(**{key: value}).model)


def test_a_zero_width_dense_layer_of_the_cnn_is_rejected():
  config = config_lib.load_config_file("configs/cnn.py")
  config.model.dense_features = (0,)
  with pytest.raises(UserError, match=r"dense_features = \(0,\)"):
    build_model(config.model)


def test_a_linear_model_without_hidden_layers_still_builds():
  build_model(tiny_config(**{"model.hidden_features": ()}).model)


@pytest.mark.parametrize("split, message", [
    ("bogus", r"'bogus' is not a split of MNIST \(Unknown split 'bogus'"),
    ("train[", r"'train\[' is not a split of MNIST \(Unrecognized split format"),
    ("train[:70000]", "incompatible with 60000 examples"),
    ("train[:0]", r"split 'train\[:0\]' of MNIST is empty"),
    ("test[10%:5%]", "of MNIST is empty"),
])
def test_bad_and_empty_splits_are_rejected_by_tfds_parser(split, message):
  with pytest.raises(UserError, match=message):
    splits.split_size(split, "config.data.train_split")


def test_split_sizes_follow_tfds_slicing():
  assert splits.split_size("train") == 60_000
  assert splits.split_size("train[:10%]+test") == 16_000
  assert splits.split_size("train[-5000:]") == 5_000


@pytest.mark.parametrize("flag, message", [
    ("--config.seed=1099511627776", "config.seed = 1099511627776"),
    ("--config.data.train_split=bogus", "is not a split of MNIST"),
    ("--config.data.train_split=train[:0]", "of MNIST is empty"),
    ("--config.model.hidden_features=(0,)", "hidden_features = (0,)"),
])
def test_the_cli_rejects_them_before_touching_the_workdir(cli_here, tmp_path, flag, message):
  workdir = tmp_path / "run"
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir", workdir, flag)
  assert message in one_error_line(result)
  assert not workdir.exists()


@pytest.mark.parametrize("text, message", [
    (None, "does not exist: give a config file"),
    ("def get_config(:\n  pass\n", "is not valid Python (line 1: invalid syntax): correct it"),
])
@pytest.mark.parametrize("override", [(), ("--config.num_epochs=2",)], ids=["plain", "override"])
def test_a_config_file_that_is_missing_or_not_python_is_one_line(tmp_path, text, message,
                                                                  override):
  """config_flags raised these from deep inside `train` (a missing file: when
  the config was first used) or while parsing (a syntax error), as tracebacks."""
  path = tmp_path / "config.py"
  if text is not None:
    path.write_text(text)
  with pytest.raises(UserError, match=f"train: the config file {path} {re.escape(message)}"):
    cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "run"), *override])
  assert not (tmp_path / "run").exists()


def test_the_command_line_says_so_in_one_line(cli_here, tmp_path):
  result = cli_here("train", f"--config={tmp_path / 'none.py'}", "--workdir", tmp_path / "run",
                   "--config.num_epochs=2")
  assert "none.py does not exist" in one_error_line(result)
