"""TensorBoard events and profiles of a run, read back with tensorboard's own reader."""

import glob
import math
import os
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configs import mlp
from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.engine import evaluate as eval_lib, metric_writer
from mnist_jax.engine.loop import train_and_evaluate

# 96 training images in batches of 32: 3 steps per epoch, steps 1..6 in all.
STEPS_PER_EPOCH = 3


def random_splits():
  rng = np.random.default_rng(0)
  def split(n):
    return data_lib.Split(rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                          rng.integers(0, 10, n).astype(np.int32))
  return split(96), split(40)


def tiny_config(**overrides):
  config = mlp.get_config()
  config.update(num_epochs=2, batch_size=32, eval_batch_size=20, steps_per_dispatch=1,
                log_every_steps=2, **overrides)
  config.model.hidden_features = (8,)
  config.checkpoint.every_steps = 0  # epoch ends only
  return config


def reader(workdir):
  events = EventAccumulator(str(workdir), size_guidance={"scalars": 0, "images": 0})
  events.Reload()
  return events


def points(events, tag):
  return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("tb") / "run")
  train_and_evaluate(tiny_config(profile_steps=2), workdir, data=random_splits(),
                     verbose=False)
  return workdir


def test_events_hold_the_epoch_lines_of_metrics_jsonl(run):
  events, lines = reader(run), run_dir.read_metrics(run)
  for key in ("test_accuracy", "learning_rate", "train_loss", "train_accuracy",
              "test_loss", "train_images_per_s"):
    assert points(events, f"epoch/{key}") == [
        (m["step"], pytest.approx(m[key], rel=1e-6)) for m in lines], key
  assert [m["step"] for m in lines] == [3, 6]


def test_training_loss_every_n_steps_is_the_mean_since_the_previous_point(run):
  events, lines = reader(run), run_dir.read_metrics(run)
  loss = dict(points(events, "step/train_loss"))
  assert sorted(loss) == [2, 4, 6]  # every 2 steps
  # Epoch 2 is steps 4..6: the point at 4 covers step 4 alone (the sums were
  # reset at the epoch's start), the point at 6 steps 5 and 6.
  assert (loss[4] + 2 * loss[6]) / 3 == pytest.approx(lines[1]["train_loss"], rel=1e-5)


def test_the_run_ends_with_a_grid_of_its_most_confident_mistakes(run):
  final = run_dir.read_metrics(run)[-1]
  wrong = round(final["test_count"] * (1 - final["test_accuracy"]))
  shown = min(wrong, tiny_config().log_misclassified)
  [grid] = reader(run).Images("misclassified/images")
  assert (grid.width, grid.height) == (28 * min(shown, 8), 28 * math.ceil(shown / 8))


def test_confident_mistakes_come_most_confident_first():
  labels_N = np.array([0, 1, 2, 3, 4])
  probs_NxC = np.full((5, 5), 0.01)
  probs_NxC[0, 0] = 0.96  # right
  probs_NxC[1, 0] = 0.60  # wrong: 1 taken for 0
  probs_NxC[2, 4] = 0.90  # wrong: 2 taken for 4
  probs_NxC[3, 1] = 0.70  # wrong: 3 taken for 1
  probs_NxC[4, 4] = 0.96  # right
  assert eval_lib.confident_mistakes(labels_N, probs_NxC, 5).tolist() == [2, 3, 1]
  assert eval_lib.confident_mistakes(labels_N, probs_NxC, 2).tolist() == [2, 3]
  table = metric_writer.mistakes_table(labels_N, probs_NxC, np.array([2, 3])).splitlines()
  assert table[2] == "| 2 → 4 (90%) | 3 → 1 (70%) |"


def test_profile_steps_writes_a_trace_for_tensorboard_and_perfetto(run, tmp_path):
  [session] = glob.glob(os.path.join(run, "profile", "plugins", "profile", "*"))
  names = os.listdir(session)
  assert any(n.endswith(".xplane.pb") for n in names)  # TensorBoard's profile plugin
  assert "perfetto_trace.json.gz" in names


def test_a_resumed_run_shows_each_epoch_once(tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(tiny_config(), workdir, data=random_splits(), verbose=False)
  # As if killed after epoch 2's line and events, before its checkpoint:
  shutil.rmtree(os.path.join(run_dir.checkpoint_dir(workdir), "6"))
  train_and_evaluate(tiny_config(), workdir, data=random_splits(), verbose=False)
  events, lines = reader(workdir), run_dir.read_metrics(workdir)
  assert len(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))) == 2
  assert points(events, "epoch/test_loss") == [
      (m["step"], pytest.approx(m["test_loss"], rel=1e-6)) for m in lines]
  assert [step for step, _ in points(events, "step/train_loss")] == [2, 4, 6]
  assert not os.path.exists(os.path.join(workdir, "profile"))  # profile_steps = 0


def test_an_epochs_points_are_in_the_file_before_the_writer_closes(tmp_path):
  """What a SIGKILL after an epoch leaves: the unclosed file already holds its points."""
  writer = metric_writer.RunWriter(str(tmp_path), tiny_config(), start_step=0,
                                   profile=False)
  writer.epoch({"epoch": 1, "step": 3, "test_accuracy": 0.5, "train_loss": 1.25})
  events = reader(str(tmp_path))
  assert points(events, "epoch/test_accuracy") == [(3, 0.5)]
  assert points(events, "epoch/train_loss") == [(3, 1.25)]
  writer.close()


@pytest.mark.slow  # a fresh process that imports torch
def test_the_writer_does_not_import_torch_but_torch_still_imports_after():
  """tensorboardX imports PyTorch when it is installed (2.3 s of every train's
  start-up); metric_writer hides it for that import only."""
  import subprocess
  import sys
  code = ("import sys; import mnist_jax.engine.metric_writer; "
          "print('torch' in sys.modules); import torch; print(torch.__name__)")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["False", "torch"]
