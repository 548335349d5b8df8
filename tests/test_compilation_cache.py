"""JAX's persistent compilation cache: where it lives, how it is switched off,
and that a run compiled from it is bitwise the run compiled afresh."""

import os
import pathlib
import subprocess
import sys

import pytest
from helpers import assert_same_bits, final_params, without_times

from mnist_jax.core import run_dir, runtime

REPO = pathlib.Path(__file__).resolve().parents[1]


def cache_folder_in_a_fresh_process(env_extra):
  """What enable_compilation_cache returns, and JAX's settings after it."""
  code = ("import jax; from mnist_jax.core import runtime; "
          "print(runtime.enable_compilation_cache(), jax.config.jax_compilation_cache_dir, "
          "jax.config.jax_persistent_cache_min_compile_time_secs)")
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", runtime.COMPILATION_CACHE_ENV)}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(env, **env_extra))
  assert result.returncode == 0, result.stderr
  return result.stdout.split()


def test_default_folder_is_under_the_cache_home(tmp_path):
  folder = str(tmp_path / "home" / "jax")
  assert cache_folder_in_a_fresh_process({runtime.CACHE_DIR_ENV: str(tmp_path / "home")}) == [
      folder, folder, "0.0"]


def test_jax_own_variable_wins_and_ours_turns_it_off(tmp_path):
  mine = str(tmp_path / "mine")
  assert cache_folder_in_a_fresh_process({"JAX_COMPILATION_CACHE_DIR": mine}) == [
      mine, mine, "0.0"]
  assert cache_folder_in_a_fresh_process({runtime.COMPILATION_CACHE_ENV: "0"}) == [
      "None", "None", "1.0"]


def train_tiny(workdir, cache, tfds_dir):
  args = ["train", "--config", "configs/mlp.py", "--workdir", str(workdir),
          "--config.num_epochs=1", "--config.data.train_split=train[:512]",
          "--config.data.test_split=test[:256]"]
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), TFDS_DATA_DIR=tfds_dir,
             JAX_LOG_COMPILES="1", JAX_EXPLAIN_CACHE_MISSES="1")  # log hits, misses
  env.pop(runtime.COMPILATION_CACHE_ENV, None)
  result = subprocess.run([sys.executable, "-m", "mnist_jax", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return (result.stderr.count("Persistent compilation cache hit"),
          result.stderr.count("PERSISTENT COMPILATION CACHE MISS"))


@pytest.mark.slow
@pytest.mark.real_data
def test_a_run_from_a_warm_cache_is_bitwise_the_cold_one(mnist_dir, tfds_dir, tmp_path):
  cache = tmp_path / "jax"
  cold_hits, cold_misses = train_tiny(tmp_path / "cold", cache, tfds_dir)
  warm_hits, warm_misses = train_tiny(tmp_path / "warm", cache, tfds_dir)
  # (A cold run may hit too: two call sites can compile the same program.)
  assert cold_misses > 10 and warm_misses == 0, (cold_misses, warm_misses)
  assert warm_hits == cold_hits + cold_misses
  assert_same_bits(final_params(tmp_path / "cold"), final_params(tmp_path / "warm"))
  assert without_times(run_dir.read_metrics(tmp_path / "cold")) == without_times(
      run_dir.read_metrics(tmp_path / "warm"))
