"""Hostile and careless commands end in one `error: ...` line and exit 2 (exit 1
for `predict` when only some files failed), never a traceback; two `train`
commands on one workdir cannot both run."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from mnist_jax.core import run_dir
from mnist_jax.core import workdir as workdir_lib
from mnist_jax.engine.loop import train_and_evaluate

from helpers import one_error_line
from robust_support import random_data, run_cli, run_python, start_cli, tiny_config

MLP = ("train", "--config", "configs/mlp.py")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A trained run (random images, so its predictions are arbitrary)."""
  workdir = tmp_path_factory.mktemp("robust_cli") / "run"
  train_and_evaluate(tiny_config(num_epochs=1), str(workdir), data=random_data(),
                     verbose=False)
  return workdir


def test_train_on_a_workdir_another_process_trains_is_refused_at_once(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.locked(workdir):
    result = run_cli(*MLP, "--workdir", workdir)
  assert f"{workdir} is being trained by process {os.getpid()}" in one_error_line(result)
  assert not os.path.exists(os.path.join(workdir, run_dir.CONFIG_FILE))


def wait_for_lock(proc, workdir, timeout=180):
  lock = workdir / workdir_lib.LOCK_FILE
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    if lock.is_file() and lock.read_text().strip() == str(proc.pid):
      return
    time.sleep(0.05)
  pytest.fail(f"the first train never held its lock (exit status {proc.poll()})")


@pytest.mark.slow
@pytest.mark.real_data
def test_two_train_commands_on_one_workdir_one_trains_and_one_is_refused(
    mnist_dir, tfds_dir, tmp_path):
  """Unlocked, both would run, crash in orbax and leave epochs 1,1,2,2.
  The first holds the lock while it loads MNIST (~6 s) and trains 3 epochs of
  60,000 images; the second needs only its imports to reach the lock."""
  workdir = tmp_path / "run"
  args = (*MLP, "--workdir", workdir, "--data_dir", mnist_dir, "--config.num_epochs=3")
  env = {"TFDS_DATA_DIR": tfds_dir}
  first = start_cli(*args, env_extra=env)
  try:
    wait_for_lock(first, workdir)
    second = run_cli(*args, env_extra=env)
    assert f"is being trained by process {first.pid}" in one_error_line(second)
    _, err = first.communicate(timeout=600)
  finally:
    first.kill()
  assert first.returncode == 0, err[-3000:]
  assert [m["epoch"] for m in run_dir.read_metrics(workdir)] == [1, 2, 3]
  assert (workdir / run_dir.METRICS_FILE).read_text().count("\n") == 3


@pytest.mark.parametrize("workdir, message", [
    ("", "the workdir is empty (--workdir=)"),
    ("configs/mlp.py", "is a file, not a folder"),
])
def test_a_workdir_that_cannot_hold_a_run_is_one_line(cli_here, workdir, message):
  assert message in one_error_line(cli_here(*MLP, f"--workdir={workdir}"))


def test_multihost_without_a_coordinator_is_one_line(tmp_path):
  result = run_cli(*MLP, "--workdir", tmp_path / "run", "--multihost")
  assert "--multihost could not join" in one_error_line(result)
  assert not (tmp_path / "run").exists()


def a_digit(path):
  pixels = np.zeros((28, 28), np.uint8)
  pixels[5:23, 12:16] = 255  # a "1"
  Image.fromarray(pixels, "L").save(path)


def decompression_bomb(path):
  """196 megapixels in ~24 KB: over twice Pillow's MAX_IMAGE_PIXELS."""
  Image.new("1", (14_000, 14_000)).save(path)
  assert os.path.getsize(path) < 100_000


def test_predict_reports_a_decompression_bomb_and_predicts_the_other_files(
    cli_here, tiny_run, tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  a_digit(folder / "a_digit.png")
  decompression_bomb(folder / "bomb.png")
  # The run's predictions are arbitrary: never called uncertain, for one wording.
  result = cli_here("predict", "--workdir", tiny_run, folder, "--uncertain_below", "0")
  line = one_error_line(result, status=1)
  assert "bomb.png: too large to decode safely" in line
  assert "a_digit.png: The number is probably a" in result.stdout


def test_predict_checks_its_figure_path_before_predicting(cli_here, tiny_run, tmp_path):
  a_digit(tmp_path / "a_digit.png")
  figure = tmp_path / "missing" / "out.png"
  result = cli_here("predict", "--workdir", tiny_run, tmp_path / "a_digit.png",
                   "--figure", figure)
  assert f"folder {figure.parent} does not exist" in one_error_line(result)
  assert "The number is" not in result.stdout


def test_ensemble_of_no_runs_says_so(cli_here):
  assert "no runs given" in one_error_line(cli_here("ensemble", "--workdirs", ","))


def test_a_study_whose_out_is_a_file_or_has_no_runs_is_one_line(cli_here, tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  result = cli_here("study", "stride", "--quick", "--out", a_file)
  assert f"--out {a_file} is a file" in one_error_line(result)
  result = run_python("experiments/stride.py", "--quick", "--tables_only",
                      "--out", tmp_path / "empty")
  assert "no finished runs of study" in one_error_line(result)
