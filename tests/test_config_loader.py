"""A run's config read back (run_dir.read_config), and dotted overrides from text."""

import json

import pytest

from mnist_jax import UserError
from mnist_jax.core import config as config_lib, run_dir

from configs import cnn as cnn_config


def test_an_old_config_json_gets_the_defaults_of_fields_added_since(tmp_path):
  saved = run_dir.config_as_dict(cnn_config.get_config())
  # Written before these fields existed:
  for key in ("select", "ema_decay", "steps_per_dispatch", "augment"):
    del saved[key]
  del saved["data"]["validation_size"]
  saved["num_epochs"], saved["data"]["train_split"] = 3, "train[:2000]"
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = run_dir.read_config(str(tmp_path))
  assert (config.select, config.ema_decay, config.steps_per_dispatch) == ("last", 0.0, 1)
  assert config.data.validation_size == 0 and config.augment.enabled is False
  assert config.augment.elastic_sigma == 4.0
  # What the run saved is kept, including fields base_config does not have.
  assert config.num_epochs == 3 and config.data.train_split == "train[:2000]"
  assert list(config.model.features) == [32, 64, 128]
  assert run_dir.config_differences(saved, run_dir.config_as_dict(config)) == []


def test_a_saved_field_of_another_type_is_one_clear_error(tmp_path):
  saved = run_dir.config_as_dict(cnn_config.get_config())
  saved["batch_size"] = "big"
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(UserError, match="config.json does not fit.*batch_size"):
    run_dir.read_config(str(tmp_path))


def test_text_overrides_take_the_type_of_the_field():
  config = cnn_config.get_config()
  config_lib.apply_overrides(config, {
      "num_epochs": "4", "optimizer.learning_rate": "3e-4", "augment.enabled": "true",
      "model.kernel_sizes": "(5, 5, 5)", "model.conv_impl": "im2col"})
  assert config.num_epochs == 4 and config.optimizer.learning_rate == 3e-4
  assert config.augment.enabled is True and config.model.kernel_sizes == (5, 5, 5)
  assert config.model.conv_impl == "im2col"
  # Values that are not text (study declarations) are set as they are.
  config_lib.apply_overrides(config, {"model.strides": (2, 2, 2)})
  assert config.model.strides == (2, 2, 2)


@pytest.mark.parametrize("dotted, value, message", [
    ("num_epochs", "many", r"config.num_epochs = 'many': it is not a valid int"),
    ("augment.enabled", "yes", "it is not true or false"),
    ("optimizer.lr", "0.1", "config.optimizer.lr: the config has no such field"),
    ("num_epochs.x", "1", "config.num_epochs.x: the config has no such field"),
    ("num_epochs", 2.5, r"config.num_epochs = 2.5: .*float"),
])
def test_bad_overrides_are_one_clear_error(dotted, value, message):
  with pytest.raises(UserError, match=message):
    config_lib.apply_overrides(cnn_config.get_config(), {dotted: value})
