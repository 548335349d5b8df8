"""S >= 2 seeds through the one training loop (train_runs): states stacked, steps vmapped.

Each seed's run directory equals that seed trained alone (to float rounding),
and a group killed mid-epoch resumes to the same bits as an unbroken group.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core import data, run_dir
from mnist_jax.engine import checkpoint, group as group_lib
from mnist_jax.engine import loop as loop_lib, mesh as mesh_lib, restore as restore_lib

from helpers import REPO, assert_same_bits, final_params, without_times

from configs import cnn as cnn_config, mlp as mlp_config

SEEDS = [3, 7]


def tiny_cnn():
  config = cnn_config.get_config()
  config.model.update(features=(4, 8), kernel_sizes=(3, 3), strides=(1, 1),
                      activations=("relu", "relu"), pooling=("max", "max"),
                      dense_features=(16,), dropout_rate=0.25)  # each seed's dropout key
  config.update(num_epochs=2, batch_size=32, eval_batch_size=50, select="best_val")
  config.data.validation_size = 32  # 160 - 32 = 128 train images: 4 steps per epoch
  config.checkpoint.every_steps = 2
  return config


def tiny_mlp(**overrides):
  config = mlp_config.get_config()
  config.model.update(hidden_features=(16,), dropout_rate=0.25)
  config.update(num_epochs=2, batch_size=16, eval_batch_size=50, steps_per_dispatch=2)
  config.data.validation_size = 32  # 160 - 32 = 128 train images: 8 steps per epoch
  config.select = "best_val"
  config.checkpoint.every_steps = 3
  config.update(overrides)
  return config


def tiny_data():
  rng = np.random.default_rng(0)
  split = lambda n: data.Split(
      images=rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
      labels=rng.integers(0, 10, n).astype(np.int32))
  return split(160), split(70)


def train_group(config, root, splits, seeds=SEEDS):
  dirs = [str(root / f"seed{s}") for s in seeds]
  return dirs, loop_lib.train_runs(config, seeds, dirs, data=splits, verbose=False)


def state_of(workdir, which="last"):
  config = run_dir.read_config(workdir)
  return mesh_lib.to_host(restore_lib.restore_state(workdir, config, which=which))


# The CNN in calls of 3 steps (4 steps = 3 + 1), the MLP one step per call.
@pytest.mark.parametrize("make_config,steps_per_dispatch", [
    pytest.param(tiny_cnn, 3, marks=pytest.mark.slow), (tiny_mlp, 1)])
def test_each_seed_equals_its_run_alone(tmp_path, make_config, steps_per_dispatch):
  config, splits = make_config(), tiny_data()
  config.steps_per_dispatch = steps_per_dispatch
  dirs, together = train_group(config, tmp_path, splits)
  assert together[0]["test_loss"] != together[1]["test_loss"]
  for seed, workdir, result in zip(SEEDS, dirs, together):
    alone_dir = str(tmp_path / f"alone{seed}")
    alone = loop_lib.train_and_evaluate(group_lib.seed_config(config, seed), alone_dir,
                                        data=splits, verbose=False)
    assert run_dir.read_config(workdir).seed == seed
    assert result["selected_epoch"] == alone["selected_epoch"]
    lines, ref = (without_times(run_dir.read_metrics(d)) for d in (workdir, alone_dir))
    assert [m["epoch"] for m in lines] == [1, 2]
    for got, want in zip(lines, ref, strict=True):
      assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert (sorted(checkpoint.manager(workdir).all_steps())
            == sorted(checkpoint.manager(alone_dir).all_steps()))
    for which in ("last", "best"):
      for a, b in zip(jax.tree.leaves(state_of(workdir, which)),
                      jax.tree.leaves(state_of(alone_dir, which)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def cut_back(workdir, steps):
  """Deletes the newest `steps` checkpoints: the run as a kill left it."""
  for step in sorted(checkpoint.manager(workdir).all_steps())[-steps:]:
    shutil.rmtree(os.path.join(run_dir.checkpoint_dir(workdir), str(step)))


@pytest.fixture(scope="module")
def mlp_group(tmp_path_factory):
  """An unbroken group of two MLP seeds (their workdirs), copied by the tests."""
  dirs, _ = train_group(tiny_mlp(), tmp_path_factory.mktemp("mlp_group"), tiny_data())
  return dirs


def copy_of(dirs, root):
  copies = [str(root / os.path.basename(d)) for d in dirs]
  for d, c in zip(dirs, copies):
    shutil.copytree(d, c)
  return copies


def test_a_group_killed_mid_epoch_resumes_to_the_same_bits(mlp_group, tmp_path):
  """The kill came mid-round: seed 7 is one save behind seed 3."""
  cut = copy_of(mlp_group, tmp_path)
  # Saves at 4, 6, 8 (epoch end), 10, 12, 16 (spans of 2 steps, every 3); kept: 3.
  cut_back(cut[0], 1)  # seed 3 back to step 12, mid-epoch 2
  cut_back(cut[1], 2)  # seed 7 back to step 10: it resumes there, and seed 3 too
  assert [checkpoint.manager(d).latest_step() for d in cut] == [12, 10]
  loop_lib.train_runs(tiny_mlp(), SEEDS, cut, data=tiny_data(), verbose=False)
  assert [checkpoint.manager(d).latest_step() for d in cut] == [16, 16]
  for a, b in zip(cut, mlp_group):
    assert (without_times(run_dir.read_metrics(a))
            == without_times(run_dir.read_metrics(b)))
    assert_same_bits(state_of(a), state_of(b))
    assert_same_bits(state_of(a, "best"), state_of(b, "best"))


def test_workdirs_not_trained_together_are_refused(mlp_group, tmp_path):
  config, splits = tiny_mlp(), tiny_data()
  dirs = copy_of(mlp_group, tmp_path)
  cut_back(dirs[1], 2)  # seed 3 two saves ahead of step 10: not one interrupted round
  with pytest.raises(UserError, match="seed3.*2 saves past step 10.*not trained together"):
    loop_lib.train_runs(config, SEEDS, dirs, data=splits, verbose=False)
  fresh = str(tmp_path / "seed9")
  with pytest.raises(UserError, match="seed3.*finished run but.*seed9.*does not"):
    loop_lib.train_runs(config, [3, 9], [dirs[0], fresh], data=splits, verbose=False)


@pytest.mark.slow
def test_a_diverging_group_names_the_seed_and_keeps_good_checkpoints(tmp_path):
  config = tiny_mlp(select="last", steps_per_dispatch=1)
  config.data.validation_size = 0
  config.optimizer.update(name="sgd", schedule="constant", learning_rate=1e30)
  config.checkpoint.every_steps = 1
  with pytest.raises(UserError, match=r"diverged for seed (\d) \(.*seed\1\): .*step (\d+)"
                     ) as info:
    train_group(config, tmp_path, tiny_data())
  bad_step = int(info.value.args[0].split("step ")[1].split()[0].strip("(),"))
  for seed in SEEDS:
    workdir = str(tmp_path / f"seed{seed}")
    assert 0 < checkpoint.manager(workdir).latest_step() < bad_step
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final_params(workdir)))


def test_one_workdir_per_seed_each_seed_once(tmp_path):
  with pytest.raises(UserError, match="one workdir per seed"):
    loop_lib.train_runs(tiny_mlp(), [0, 1], [str(tmp_path)], data=tiny_data())
  with pytest.raises(UserError, match="list each seed once"):
    loop_lib.train_runs(tiny_mlp(), [0, 0], [str(tmp_path / "a"), str(tmp_path / "b")],
                        data=tiny_data())
  with pytest.raises(UserError, match="a workdir is listed twice"):
    loop_lib.train_runs(tiny_mlp(), [0, 1], [str(tmp_path / "a")] * 2, data=tiny_data())


# The command line, on 2,000 real MNIST images: 100 steps per epoch in calls of
# 4 (a divisor of the MLP's 32), a save every 12 steps, so 8 of each epoch's
# 9 saves are mid-epoch.
CLI_FLAGS = ("--config.data.train_split=train[:2000]", "--config.data.test_split=test[:1000]",
             "--config.num_epochs=2", "--config.batch_size=20",
             "--config.steps_per_dispatch=4", "--config.checkpoint.every_steps=12")


def start_cli(workdir, mnist_dir, tfds_dir):
  env = dict(os.environ, MNIST_DIR=mnist_dir, TFDS_DATA_DIR=tfds_dir)
  return subprocess.Popen(
      [sys.executable, "-m", "mnist_jax", "train", "--config", "configs/mlp.py",
       "--workdir", str(workdir), "--seeds", "0,1", *CLI_FLAGS],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_cli(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return out


def wait_for_a_mid_epoch_checkpoint(proc, workdir, steps_per_epoch, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    for seed_dir in ("seed0", "seed1"):
      folder = pathlib.Path(run_dir.checkpoint_dir(str(workdir / seed_dir)))
      steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()]
      if any(step % steps_per_epoch for step in steps):
        return
    time.sleep(0.01)
  pytest.fail(f"no mid-epoch checkpoint appeared (exit status {proc.poll()})")


def solo_run(real_mnist, seed, workdir):
  train, test = real_mnist
  config = mlp_config.get_config()
  config.seed = seed
  config.data.update(train_split="train[:2000]", test_split="test[:1000]")
  config.update(num_epochs=2, batch_size=20, steps_per_dispatch=4)
  config.checkpoint.every_steps = 12
  splits = (data.Split(train.images[:2000], train.labels[:2000]),
            data.Split(test.images[:1000], test.labels[:1000]))
  loop_lib.train_and_evaluate(config, str(workdir), data=splits, verbose=False)
  return workdir


@pytest.mark.slow
@pytest.mark.real_data
def test_cli_seeds_killed_mid_epoch_resume_to_an_unbroken_group_and_the_solo_runs(
    real_mnist, mnist_dir, tfds_dir, tmp_path):
  unbroken = start_cli(tmp_path / "unbroken", mnist_dir, tfds_dir)
  killed = tmp_path / "killed"
  proc = start_cli(killed, mnist_dir, tfds_dir)
  wait_for_a_mid_epoch_checkpoint(proc, killed, steps_per_epoch=100)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  kept = [checkpoint.manager(str(killed / d)).latest_step() for d in ("seed0", "seed1")]
  assert all(step is None or step < 200 for step in kept)  # it really was interrupted
  out = finish_cli(start_cli(killed, mnist_dir, tfds_dir))
  assert [line.split(":")[0] for line in out.splitlines() if "final test accuracy" in line
          ] == ["seed 0", "seed 1"]
  finish_cli(unbroken)
  for seed in (0, 1):
    got, want = killed / f"seed{seed}", tmp_path / "unbroken" / f"seed{seed}"
    lines = without_times(run_dir.read_metrics(got))
    assert [m["epoch"] for m in lines] == [1, 2]
    assert lines == without_times(run_dir.read_metrics(want))
    assert_same_bits(final_params(got), final_params(want))
    # Alone, to rounding, which 200 Adam steps can grow (measured: seed 0's
    # weights up to 0.0045 apart, its test loss 2.3e-5 relative; seed 1's
    # weights within 1.6e-7).
    alone = solo_run(real_mnist, seed, tmp_path / f"alone{seed}")
    for m, ref in zip(lines, without_times(run_dir.read_metrics(alone)), strict=True):
      assert m == pytest.approx(ref, rel=1e-4, abs=1e-6)
    for x, y in zip(jax.tree.leaves(final_params(got)),
                    jax.tree.leaves(final_params(alone)), strict=True):
      np.testing.assert_allclose(x, y, atol=1e-2)
