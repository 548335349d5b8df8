"""config.json records its format version; a run saved in an older format
reads as today's (core/run_format.py)."""

import json

import pytest

from mnist_jax import UserError
from mnist_jax.core import run_dir, run_format
from mnist_jax.core.models import build_model

from configs import speedrun as speedrun_config


def version_1_speedrun():
  """The speedrun's config.json as version 1 wrote it: no format_version, and
  no padding or pool_before_norm (its runs were 'same' and norm-then-pool)."""
  saved = run_dir.config_as_dict(speedrun_config.get_config())
  del saved["model"]["padding"], saved["model"]["pool_before_norm"]
  return saved


def test_a_version_1_config_json_reads_as_the_run_it_was(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(version_1_speedrun()))
  config = run_dir.read_config(str(tmp_path))
  assert "format_version" not in config
  assert (config.model.padding, config.model.pool_before_norm) == ("same", False)
  model = build_model(config.model)
  assert (model.padding, model.pool_before_norm) == ("same", False)
  assert model.feature_map_sizes() == [14, 7]  # 'same' 5x5 and 3x3: 28 -> 14 -> 7


def test_a_version_1_run_resumes_under_todays_config_with_the_same_values(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(version_1_speedrun()))
  (tmp_path / run_dir.METRICS_FILE).write_text('{"epoch": 1}\n')  # it has results
  today = speedrun_config.get_config()
  today.model.update(padding="same", pool_before_norm=False)
  run_dir.claim(str(tmp_path), today, force=False)  # the same run: no refusal
  today.model.padding = "valid"
  (tmp_path / "config.json").write_text(json.dumps(version_1_speedrun()))
  with pytest.raises(UserError, match=r"another config \(model.padding: same -> valid\)"):
    run_dir.claim(str(tmp_path), today, force=False)


def test_new_runs_write_the_current_version_and_read_it_back(tmp_path):
  config = speedrun_config.get_config()
  run_dir.write_config(str(tmp_path), config)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["format_version"] == run_format.FORMAT_VERSION
  assert run_dir.read_config(str(tmp_path)).to_dict() == \
      run_format.from_saved(run_dir.config_as_dict(config)).to_dict()


def test_a_config_json_of_a_newer_format_is_one_clear_error(tmp_path):
  saved = dict(version_1_speedrun(), format_version=run_format.FORMAT_VERSION + 1)
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(UserError, match="format_version 3, which this version of "
                                      "mnist_jax .format 2. cannot read"):
    run_dir.read_config(str(tmp_path))


def test_a_model_key_a_run_lacks_is_its_attribute_default(tmp_path):
  """A key added to the model's attributes and its config file later: the
  saved run was built with the default, so only another value is a change."""
  saved = run_dir.config_as_dict(speedrun_config.get_config())
  today = speedrun_config.get_config()
  today.model.conv_type = "conv"  # CNN's default; the speedrun's file leaves it out
  assert run_dir.config_differences(saved, run_dir.config_as_dict(today)) == []
  today.model.conv_type = "local"
  assert run_dir.config_differences(saved, run_dir.config_as_dict(today)) == [
      "model.conv_type: (absent) -> local"]
