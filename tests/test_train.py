"""The train step, evaluation and the whole loop on small data."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnist_jax.core import data, run_dir
from mnist_jax.engine import evaluate as eval_lib, restore as restore_lib, state as state_lib, steps as steps_lib
from mnist_jax.engine.loop import train_and_evaluate

from configs import cnn as cnn_config, mlp as mlp_config


def fixed_batch(n=32, seed=0):
  """A deterministic batch that needs no dataset: noise images, cycling labels."""
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
          "label": (np.arange(n) % 10).astype(np.int32)}


def eval_loss(state, batch):
  logits = state.apply_fn({"params": state.params}, data.scale_pixels(batch["image"]))
  return float(steps_lib.cross_entropy(logits, batch["label"]).mean())


def test_golden_one_step_loss_of_default_cnn():
  """Pins the loss of the default CNN before and after one update from seed 0.

  Any unintended change to init, data scaling, the loss, dropout or the
  optimiser moves these numbers (values measured on CPU, float32). That the
  step computes the mathematics is tests/test_oracle.py's check: the MLP's
  step against a float64 numpy forward, backward and Adam update.
  """
  config = cnn_config.get_config()
  state = state_lib.create_train_state(config, jax.random.key(0), steps_per_epoch=468)
  batch = fixed_batch()
  before = eval_loss(state, batch)
  state, metrics = jax.jit(steps_lib.train_step)(state, batch, jax.random.key(1))
  assert int(state.step) == 1
  assert before == pytest.approx(GOLDEN_EVAL_LOSS_BEFORE, rel=1e-4)
  assert float(metrics["loss"]) / 32 == pytest.approx(GOLDEN_TRAIN_LOSS, rel=1e-4)
  assert eval_loss(state, batch) == pytest.approx(GOLDEN_EVAL_LOSS_AFTER, rel=1e-4)


GOLDEN_EVAL_LOSS_BEFORE = 2.3629072
GOLDEN_TRAIN_LOSS = 2.3745277  # with dropout, rng key(1)
GOLDEN_EVAL_LOSS_AFTER = 2.3376479


def numpy_cross_entropy(logits_BxC, labels_B, smoothing):
  """-sum_c t_c log softmax(z)_c with targets t = (1 - e) one_hot + e / C, in float64."""
  z = logits_BxC.astype(np.float64)
  log_p = z - z.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  targets = np.full(z.shape, smoothing / z.shape[-1])
  targets[np.arange(len(labels_B)), labels_B] += 1.0 - smoothing
  return -(targets * log_p).sum(-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_is_the_formula(smoothing):
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=4.0, size=(64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 64)
  np.testing.assert_allclose(steps_lib.cross_entropy(logits, labels, smoothing),
                             numpy_cross_entropy(logits, labels, smoothing),
                             rtol=1e-5, atol=1e-6)


def test_label_smoothing_by_hand():
  # Two classes, logits (log 3, 0): p = (3/4, 1/4). Label 0 smoothed by 0.1
  # targets (0.95, 0.05); unsmoothed, the loss is -log(3/4).
  logits = np.array([[np.log(3.0), 0.0]], np.float32)
  label = np.array([0])
  assert float(steps_lib.cross_entropy(logits, label, 0.1)[0]) == pytest.approx(
      -(0.95 * np.log(0.75) + 0.05 * np.log(0.25)), rel=1e-6)  # 0.3426127
  assert float(steps_lib.cross_entropy(logits, label)[0]) == pytest.approx(
      -np.log(0.75), rel=1e-6)


def test_train_step_learns_a_fixed_batch():
  config = mlp_config.get_config()
  state = state_lib.create_train_state(config, jax.random.key(0), steps_per_epoch=10)
  step = jax.jit(steps_lib.train_step)
  batch = fixed_batch()
  losses = []
  for _ in range(30):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]) / 32)
  assert losses[-1] < 0.2 * losses[0]


def test_evaluate_counts_every_image_once_with_a_partial_last_batch():
  config = mlp_config.get_config()
  state = state_lib.create_train_state(config, jax.random.key(0), steps_per_epoch=1)
  raw = fixed_batch(n=250, seed=3)
  split = data.Split(images=raw["image"], labels=raw["label"])
  result = eval_lib.evaluate(state, split, batch_size=100)  # 100 + 100 + 50 (padded)
  logits = state.apply_fn({"params": state.params}, data.scale_pixels(raw["image"]))
  expected = float(np.mean(np.argmax(logits, -1) == raw["label"]))
  assert result["count"] == 250
  assert result["accuracy"] == pytest.approx(expected)


def test_eval_batches_pad_and_mask():
  split = data.Split(images=np.ones((7, 28, 28, 1), np.uint8), labels=np.arange(7))
  batches = list(data.eval_batches(split, 3))
  assert [len(b[1]) for b in batches] == [3, 3, 3]
  assert np.sum([b[2].sum() for b in batches]) == 7
  assert batches[-1][2].tolist() == [1, 0, 0]


def test_epoch_order_is_a_pure_function_of_key_and_epoch():
  key = jax.random.key(7)
  a = data.epoch_permutation(key, 1, 100)
  assert np.array_equal(a, data.epoch_permutation(key, 1, 100))
  assert not np.array_equal(a, data.epoch_permutation(key, 2, 100))
  assert sorted(a.tolist()) == list(range(100))


@pytest.fixture
def mocked_mnist(tmp_path, monkeypatch):
  """tfds's mock MNIST (random images): the real data path without real data.

  The mock replaces download_and_prepare, so the placeholder files in the
  MNIST folder only satisfy the up-front check and are never read.
  """
  folder = tmp_path / "mnist_files"
  folder.mkdir()
  for name in data.MNIST_FILES:
    (folder / name).write_bytes(b"")
  monkeypatch.setenv(data.MNIST_DIR_ENV, str(folder))
  with tfds.testing.mock_data(num_examples=320):
    yield


def test_training_loop_end_to_end_on_mock_data(mocked_mnist, tmp_path):
  config = cnn_config.get_config()
  config.num_epochs = 2
  config.batch_size = 64
  config.eval_batch_size = 96  # 320 = 3 * 96 + 32: exercises the padded batch
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir, verbose=False)

  lines = run_dir.read_metrics(workdir)
  assert [m["epoch"] for m in lines] == [1, 2]
  assert all(set(run_dir.METRIC_KEYS) <= set(m) for m in lines)
  assert lines[-1]["step"] == 2 * (320 // 64)
  assert lines[-1]["test_count"] == 320
  # Each line's learning rate is the one of its epoch's last step, 4 and 9:
  # a cosine from 1e-3 over the 10 steps, 0.5e-3 (1 + cos(pi t / 10)).
  assert [m["learning_rate"] for m in lines] == pytest.approx(
      [0.5e-3 * (1 + np.cos(np.pi * 0.4)), 0.5e-3 * (1 + np.cos(np.pi * 0.9))], rel=1e-5)
  assert 0.0 <= final["test_accuracy"] <= 1.0 and np.isfinite(final["test_loss"])
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["model"]["name"] == "cnn" and saved["num_epochs"] == 2
  assert final["num_params"] == 241_546

  # The saved state restores and evaluates to the same numbers.
  restored = restore_lib.restore_and_evaluate(workdir)
  assert restored["accuracy"] == pytest.approx(final["test_accuracy"])
  assert restored["loss"] == pytest.approx(final["test_loss"], rel=1e-5)
