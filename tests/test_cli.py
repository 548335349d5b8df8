"""Bad input ends in one clear line on stderr and exit status 2, never a traceback."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from mnist_jax import UserError
from mnist_jax.core import data

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None, unset=("MNIST_DIR",), timeout=300):
  env = {k: v for k, v in os.environ.items() if k not in unset}
  env.update(env_extra or {})
  return subprocess.run([sys.executable, "-m", "mnist_jax", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0]


def test_no_data_and_no_network_names_the_variable_and_files(tmp_path):
  result = run_cli("train", "--config", "configs/mlp.py", "--workdir", str(tmp_path / "run"),
                   env_extra={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert_one_line_error(result, "MNIST_DIR", "--data_dir", *data.MNIST_FILES)


def test_data_dir_without_the_files_names_what_is_missing(tmp_path):
  folder = tmp_path / "half"
  folder.mkdir()
  (folder / "train-images-idx3-ubyte.gz").write_bytes(b"x")
  result = run_cli("train", "--config", "configs/mlp.py", "--workdir", str(tmp_path / "run"),
                   "--data_dir", str(folder),
                   env_extra={"TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert_one_line_error(result, "lacks", "t10k-labels-idx1-ubyte.gz")


def test_corrupt_file_is_named(mnist_dir, tmp_path):
  folder = tmp_path / "corrupt"
  shutil.copytree(mnist_dir, folder)
  victim = folder / "train-labels-idx1-ubyte.gz"
  victim.chmod(0o644)
  raw = bytearray(victim.read_bytes())
  raw[100] ^= 0xFF
  victim.write_bytes(bytes(raw))
  with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz is corrupt.*replace"):
    data.prepare(str(folder), str(tmp_path / "tfds"))


def test_impossible_config_is_rejected_before_any_work(tmp_path):
  result = run_cli("train", "--config", "configs/cnn.py", "--workdir", str(tmp_path / "run"),
                   "--config.model.strides=(3,3,3)")
  assert_one_line_error(result, "stage", "leaves nothing", "smaller strides")
  assert not (tmp_path / "run").exists()


def test_misspelt_override_is_an_error(tmp_path):
  result = run_cli("train", "--config", "configs/cnn.py", "--workdir", str(tmp_path / "run"),
                   "--config.num_epoch=3")
  assert_one_line_error(result, "num_epoch", "num_epochs")


def test_unknown_command_and_missing_workdir(tmp_path):
  assert_one_line_error(run_cli("fit"), "unknown command 'fit'")
  assert_one_line_error(run_cli("train", "--config", "configs/cnn.py"), "--workdir")
  assert_one_line_error(run_cli("evaluate", "--workdir", str(tmp_path)),
                        "config.json not found")


def test_batch_size_larger_than_the_data_is_rejected(mnist_dir, tfds_dir, tmp_path):
  result = run_cli("train", "--config", "configs/mlp.py", "--workdir", str(tmp_path / "r"),
                   "--data_dir", mnist_dir, "--config.data.train_split=train[:100]",
                   "--config.batch_size=128", env_extra={"TFDS_DATA_DIR": tfds_dir})
  assert_one_line_error(result, "batch_size = 128", "100 training images")
