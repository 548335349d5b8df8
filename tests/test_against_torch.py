"""`benchmark --against torch` times the same function in PyTorch: the twin has
our parameter count, our logits and gradients with our weights copied in, and
takes our optimiser's steps; without PyTorch the command says how to get it.

torch is in the `test` extra (pyproject.toml), so nothing here skips.
"""

import csv
import functools
import pathlib
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
import torch

from configs import cnn as cnn_config
from configs import frontier_cpu as frontier_config
from configs import mlp as mlp_config
from configs import speedrun as speedrun_config
from helpers import one_error_line
from mnist_jax.core import data
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import count_params
from mnist_jax.engine import state as state_lib, steps as steps_lib
from mnist_jax.tools import against_torch, benchmark, torch_models

REPO = pathlib.Path(__file__).resolve().parents[1]


def random_images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), np.uint8)


def as_nchw(images_NxHxWxC):
  return torch.from_numpy(images_NxHxWxC.transpose(0, 3, 1, 2).copy()).float() / 255.0


def strided_batch_norm_model():
  """Batch norm, a stride-2 'SAME' conv on an even map (asymmetric padding),
  unpooled stages: the twin's less common paths."""
  model = frontier_config.get_config().model
  model.strides = (2, 1, 1, 1, 1)
  model.pooling = ("none", "none", "max", "none", "max")
  return model


@pytest.mark.parametrize("model_config", [
    mlp_config.get_config().model, cnn_config.get_config().model,
    speedrun_config.get_config().model, strided_batch_norm_model()],
    ids=["mlp", "cnn", "speedrun", "strided_batch_norm"])
def test_the_twin_has_our_parameters_and_logits(model_config):
  variables = build_model(model_config).init(jax.random.key(0), np.zeros((1, 28, 28, 1)))
  # Running statistics away from their initial 0 / 1, so that copying them matters.
  stats = jax.tree.map(lambda s: s + np.random.default_rng(1).uniform(0.1, 0.5, s.shape),
                       variables.get("batch_stats", {}))
  twin = torch_models.build_torch_model(model_config).eval()
  assert torch_models.count_torch_params(twin) == count_params(variables["params"])
  # Keys sorted, as any tree_map (an optimiser step, a restore) leaves them:
  # the layers are matched by name, not by the dict's order (bn0 < conv0).
  sorted_params = dict(sorted(variables["params"].items()))
  torch_models.load_flax_params(twin, sorted_params, stats)
  images = random_images(3)
  ours_BxC = build_model(model_config).apply(
      {"params": variables["params"], "batch_stats": stats}, data.scale_pixels(images))
  theirs_BxC = twin(as_nchw(images)).detach().numpy()
  assert theirs_BxC.shape == (3, 10)
  np.testing.assert_allclose(theirs_BxC, np.asarray(ours_BxC), rtol=1e-4, atol=1e-4)


def our_steps(config, images, labels, n):
  """Our state after `n` train steps on one batch (the loop's own step function)."""
  state = state_lib.create_train_state(config, jax.random.key(0),
                                       benchmark.STEPS_PER_EPOCH)
  initial = state
  step = jax.jit(functools.partial(steps_lib.train_step,
                                   label_smoothing=config.label_smoothing))
  for _ in range(n):
    state, _ = step(state, {"image": images, "label": labels}, jax.random.key(1))
  return initial, state


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_twin_takes_our_optimizer_steps(optimizer):
  """Same loss, gradients, optimiser and learning-rate schedule: after two
  steps from our initial weights, the twin's weights are ours."""
  config = speedrun_config.get_config()  # no dropout: both sides are deterministic
  # Nor batch norm: it subtracts the conv biases again, so their gradients (and
  # a few others) are rounding noise, which Adam divides by its own tiny scale
  # into full-size steps that differ between any two implementations. The
  # twin's batch norm is compared in test_the_twin_has_our_parameters_and_logits.
  config.model.batch_norm = False
  config.batch_size, config.optimizer.name = 8, optimizer
  config.optimizer.learning_rate = 0.05 if optimizer == "sgd" else 3e-3
  config.label_smoothing = 0.1
  images, labels = random_images(8), (np.arange(8) % 10).astype(np.int32)
  initial, ours = our_steps(config, images, labels, n=2)
  twin = against_torch.TorchCase(config, initial, images, labels, channels_last=True,
                                 steps_per_epoch=benchmark.STEPS_PER_EPOCH)
  twin.run_round(steps=1)  # a warm-up step and a timed one
  expected = torch_models.build_torch_model(config.model)
  torch_models.load_flax_params(expected, ours.params, ours.batch_stats)
  for theirs, want in zip(twin.model.parameters(), expected.parameters(), strict=True):
    np.testing.assert_allclose(theirs.detach().numpy(), want.detach().numpy(),
                               rtol=1e-4, atol=2e-6)
  assert twin.step == 2 and len(twin.train_s) == 1
  assert twin.lrs[0] < twin.lrs[1]  # the one-cycle warm-up, as ours


def test_torch_columns_on_made_up_timings_by_hand():
  """images/s = batch / the median seconds per step; the ratio is ours over
  PyTorch's faster format."""
  timed = lambda *seconds: types.SimpleNamespace(train_s=list(seconds))
  case = types.SimpleNamespace(config=types.SimpleNamespace(batch_size=64),
                               train=timed(0.01, 0.008, 0.02),
                               torch=[timed(0.016, 0.016, 0.032), timed(0.004, 0.005, 0.1)])
  assert benchmark.torch_columns(case) == {
      "torch_nchw_img_s": 4000, "torch_channels_last_img_s": 12800,  # 64 / 5 ms
      "ours_vs_torch": 0.5}  # 64 / 0.01 s = 6,400 against 12,800


def test_benchmark_against_torch_adds_the_twins_columns(tmp_path):
  rows = benchmark.run(["configs/mlp.py"], rounds=1, steps=1, against="torch",
                       out=str(tmp_path / "bench.csv"))
  row = rows[0]
  assert row["torch_nchw_img_s"] > 0 and row["torch_channels_last_img_s"] > 0
  assert row["ours_vs_torch"] == pytest.approx(
      row["train_img_s"] / max(row["torch_nchw_img_s"], row["torch_channels_last_img_s"]),
      rel=0.01)
  assert torch.get_num_threads() == against_torch.torch_threads()


def test_against_only_times_the_twins_and_not_ours(tmp_path, monkeypatch):
  monkeypatch.setattr(benchmark.Case, "run_round", None)  # timing ours would be a bug
  rows = benchmark.run(["configs/mlp.py"], rounds=1, steps=1, against="torch",
                       against_only=True, out=str(tmp_path / "bench.csv"))
  assert list(rows[0]) == ["case", "batch", "torch_nchw_img_s", "torch_channels_last_img_s"]
  assert rows[0]["torch_channels_last_img_s"] > 0


@pytest.mark.slow
def test_separate_processes_take_the_median_of_each_frameworks_processes(tmp_path,
                                                                         monkeypatch):
  monkeypatch.chdir(REPO)
  out = tmp_path / "separate.csv"
  result = subprocess.run(
      [sys.executable, "-m", "mnist_jax", "benchmark", "--configs", "configs/mlp.py",
       "--against", "torch", "--separate_processes", "2", "--rounds", "1", "--steps", "1",
       "--out", str(out)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.count("pair ") == 2
  (row,) = list(csv.DictReader(open(out)))
  assert row["case"] == "mlp" and row["processes_each"] == "2"
  for column in ("train_img_s", "torch_nchw_img_s", "torch_channels_last_img_s"):
    runs = [float(v) for v in row[f"{column}_runs"].split()]
    assert len(runs) == 2 and float(row[column]) == pytest.approx(np.median(runs), abs=1)
  best_torch = max(float(row["torch_nchw_img_s"]), float(row["torch_channels_last_img_s"]))
  assert float(row["ours_vs_torch"]) == pytest.approx(
      float(row["train_img_s"]) / best_torch, rel=0.01)


def test_against_only_and_separate_processes_need_against_torch(cli_here):
  one_error_line(cli_here("benchmark", "--against_only", "--out", "unused.csv"),
                 "--against_only times only the other framework's twin")
  one_error_line(cli_here("benchmark", "--separate_processes", "2", "--out", "unused.csv"),
                 "give --against torch")


def test_without_torch_the_command_says_how_to_install_it(cli_here, monkeypatch):
  monkeypatch.setattr(benchmark, "build_cases", None)  # compiling would be a bug
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as uninstalled
  for name in ("against_torch", "torch_models"):  # as if never imported
    monkeypatch.delitem(sys.modules, f"mnist_jax.tools.{name}")
    monkeypatch.delattr(f"mnist_jax.tools.{name}")
  error = one_error_line(cli_here("benchmark", "--against", "torch", "--out", "unused.csv"))
  assert error == ("error: --against torch needs PyTorch, an optional extra: "
                   "pip install -e .[bench]")


@pytest.mark.parametrize("args, fragment", [
    (["--against", "tensorflow"], "the only other framework is 'torch'"),
    (["--against", "torch", "--configs", "configs/lenet5.py"], "has no PyTorch twin"),
    (["--against", "torch", "--configs", "configs/frontier_cpu.py"], "without augmentation"),
    (["--against", "torch", "--configs", "configs/cnn.py"], "--set augment.enabled=false"),
])
def test_configs_without_a_twin_are_refused_before_compiling(args, fragment,
                                                               cli_here, monkeypatch):
  monkeypatch.setattr(benchmark, "build_cases", None)  # compiling would be a bug
  assert fragment in one_error_line(cli_here("benchmark", *args, "--out", "unused.csv"))
