"""The speedrun tool's table arithmetic on made-up runs, and its refusals.
(It runs end to end, one seed on 1,000 images, in tests/test_gpu_check.py.)"""

import pytest

from mnist_jax import UserError
from mnist_jax.tools import speedrun


def _row(seed, acc, train_s, e2e, images=60000):
  return {"seed": seed, "test_accuracy": acc, "train_s": train_s, "end_to_end_s": e2e,
          "cpu_s": 2 * e2e, "load_1min": 1.5, "train_images": images, "epochs": 1}


def test_summary_counts_the_seeds_below_99_percent():
  rows = [_row(0, 0.9912, 9.0, 14.0), _row(1, 0.9899, 9.5, 14.5), _row(2, 0.9901, 8.5, 13.0)]
  assert speedrun.summary(rows) == {
      "seeds": 3, "mean_accuracy": pytest.approx(0.9904), "below_target": 1,
      "train_s_max": 9.5, "end_to_end_s_max": 14.5}


def test_group_ratio_is_images_per_second_together_over_one_after_another():
  separate = [_row(0, 0.99, 10.0, 15.0), _row(1, 0.99, 10.0, 15.0)]  # 120,000 images in 20 s
  group = [_row(0, 0.99, 16.0, 20.0), _row(1, 0.99, 16.0, 20.0)]  # 120,000 images in 16 s
  assert speedrun.group_ratio(separate, group) == pytest.approx(20.0 / 16.0)


def test_markdown_lists_each_seed_and_the_mean():
  rows = [_row(0, 0.9912, 9.04, 14.0), _row(1, 0.9898, 9.5, 14.46)]
  text = speedrun.markdown(rows, speedrun.summary(rows), "python -m mnist_jax train ...")
  assert "| 0 | 99.12% | 9.0 | 14.0 | 28.0 | 1.5 |" in text
  assert "| 1 | 98.98% | 9.5 | 14.5 | 28.9 | 1.5 |" in text
  assert "Mean test accuracy **99.05%** over 2 seeds; 1 below 99.0%." in text


@pytest.mark.parametrize("seeds, config, message", [
    ([], "configs/speedrun.py", "give one or more seeds"),
    ([0, 0], "configs/speedrun.py", "each once"),
    ([0], "configs/nope.py", "--config_file configs/nope.py: no such file"),
])
def test_bad_input_is_refused_before_any_run(seeds, config, message, tmp_path, monkeypatch):
  monkeypatch.setattr(speedrun, "run_timed", None)  # starting a run would be a bug
  with pytest.raises(UserError, match=message):
    speedrun.run(seeds, str(tmp_path), config)


def test_the_command_line_reaches_the_tool_with_every_flag(tmp_path, monkeypatch):
  from mnist_jax import cli
  calls = []
  monkeypatch.setattr(speedrun, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
  assert cli.main(["speedrun", "--seeds", "0,1", "--set", "num_epochs=1", "--set",
                   "batch_size=32", "--out", str(tmp_path), "--config_file",
                   "configs/speedrun.py", "--group"]) == 0
  assert calls == [(([0, 1], str(tmp_path), "configs/speedrun.py",
                     ["num_epochs=1", "batch_size=32"]), {"group": True})]
