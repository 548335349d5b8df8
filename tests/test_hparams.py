"""What a run says of its hyperparameters: `train` prints the fields the command
line changed in the config file, and every run's TensorBoard events hold its
config.json as hparams (read back with tensorboard's own reader)."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_jax import cli
from mnist_jax.core import run_dir
from mnist_jax.engine import loop, metric_writer
from test_tensorboard import random_splits, tiny_config


def train_output(capsys, monkeypatch, *overrides):
  """stdout of `train --config configs/mlp.py OVERRIDES`, its training faked."""
  monkeypatch.setattr(loop, "train_runs", lambda config, seeds, workdirs, **_: [{
      "epoch": config.num_epochs, "test_accuracy": 0.5, "test_loss": 1.0}])
  monkeypatch.setenv("XLA_FLAGS", "")  # the command sets its GPU flag there
  with pytest.raises(SystemExit) as exited:
    cli.run(["train", "--config", "configs/mlp.py", "--workdir", "unused", *overrides])
  out, err = capsys.readouterr()
  assert exited.value.code == 0, err
  return out.splitlines()


def test_train_prints_the_overrides_with_the_files_values(capsys, monkeypatch):
  lines = train_output(capsys, monkeypatch, "--config.num_epochs=3",
                       "--config.model.hidden_features=(16,)",
                       "--config.optimizer.learning_rate=0.01")
  assert lines[0].startswith("config configs/mlp.py, changed by the command line")
  # configs/mlp.py: 20 epochs, 128 hidden units, learning rate 0.001.
  assert lines[1:4] == ["  model.hidden_features: [128] -> [16]", "  num_epochs: 20 -> 3",
                        "  optimizer.learning_rate: 0.001 -> 0.01"]
  assert lines[4].startswith("final test accuracy 0.5000")


def test_train_without_overrides_says_so(capsys, monkeypatch):
  lines = train_output(capsys, monkeypatch)
  assert lines[0] == "config configs/mlp.py, as written (no --config.FIELD overrides)"


def hparams_of(workdir):
  """(hparams of the session start, metric tags of the experiment) in the events."""
  events = EventAccumulator(workdir)
  events.Reload()
  content = events.PluginTagToContent("hparams")
  start = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/session_start_info"]).session_start_info
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/experiment"]).experiment
  values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in start.hparams.items()}
  return values, {m.name.tag for m in experiment.metric_infos}, events


@pytest.mark.slow  # two tiny runs compiled and trained: ~10 s
def test_every_run_writes_its_config_as_hparams(tmp_path):
  # Two seeds trained together: each run's events hold its own seed.
  workdirs = [str(tmp_path / f"seed_{seed}") for seed in (3, 4)]
  loop.train_runs(tiny_config(log_misclassified=0), [3, 4], workdirs,
                  data=random_splits(), verbose=False)
  for seed, workdir in zip((3, 4), workdirs):
    values, metrics, events = hparams_of(workdir)
    assert set(values) == set(run_dir.flat_config(run_dir.read_config(workdir)))
    assert values["seed"] == seed and values["num_epochs"] == 2
    assert values["model.name"] == "mlp" and values["model.hidden_features"] == "[8]"
    assert values["augment.enabled"] is False
    # The HParams tab's metrics are the run's epoch/* scalars (no validation here).
    assert metrics == {f"epoch/{k}" for k in metric_writer.HPARAM_METRICS}
    assert {m for m in metrics if "/val_" not in m} <= set(events.Tags()["scalars"])
