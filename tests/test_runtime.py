"""XLA flags set before JAX starts."""

import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from mnist_jax.core import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_determinism_is_added_to_xla_flags_and_can_be_off(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  runtime.set_gpu_determinism(True)
  assert runtime.os.environ["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=2 --xla_gpu_deterministic_ops=true")
  monkeypatch.delenv("XLA_FLAGS")
  runtime.set_gpu_determinism(False)
  assert runtime.os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"


def test_a_value_already_in_xla_flags_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")
  runtime.set_gpu_determinism(True)
  assert runtime.os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"


def test_eigen_convolutions_are_added_to_xla_flags(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  runtime.use_eigen_cpu_convolutions()
  assert runtime.os.environ["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=2 "
      "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")


def test_a_ynn_setting_already_in_xla_flags_wins(monkeypatch):
  mine = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
  monkeypatch.setenv("XLA_FLAGS", mine)
  runtime.use_eigen_cpu_convolutions()
  assert runtime.os.environ["XLA_FLAGS"] == mine


@pytest.mark.parametrize("version", ["0.9.2", "0.4.35", "unknown"])
def test_jaxlib_without_the_flag_is_left_alone(monkeypatch, version):
  # XLA stops the process at a flag it does not know.
  from importlib import metadata
  monkeypatch.setattr(metadata, "version", lambda name: version)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  runtime.use_eigen_cpu_convolutions()
  assert "XLA_FLAGS" not in runtime.os.environ


def test_importing_mnist_jax_leaves_xla_flags_alone():
  code = ("import os, mnist_jax, mnist_jax.core.models, mnist_jax.engine.loop; "
          "print(repr(os.environ.get('XLA_FLAGS'))); mnist_jax.setup_xla(); "
          "print(repr(os.environ.get('XLA_FLAGS')))")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  after_import, after_setup = result.stdout.splitlines()
  assert after_import == "None"
  assert runtime.YNN_FUSION_FLAG in after_setup


def test_every_command_sets_the_convolution_flag(cli_here, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS")
  with warnings.catch_warnings():  # this process's JAX may have started: it says so
    warnings.simplefilter("ignore", UserWarning)
    result = cli_here("evaluate", "--workdir", "/nonexistent/run")
  assert result.returncode == 2  # the command ran, and failed on its workdir
  assert runtime.YNN_FUSION_FLAG in os.environ["XLA_FLAGS"]


# The speedrun's two convolutions ('valid', 5x5 on one channel, 3x3 on 24) and the
# default CNN's ('same'), through the model, as a training step sees them: logits
# and every parameter's gradient on a fixed batch, and how many convolutions the
# compiled step put into YNNPACK fusions; one .npz for all the configs named.
GRADIENTS_SCRIPT = r"""
import re, sys
import mnist_jax
mnist_jax.setup_xla()
import jax, jax.numpy as jnp, numpy as np, optax
from mnist_jax.core import config as config_lib
from mnist_jax.core.models import build_model
out, config_paths = sys.argv[1], sys.argv[2:]
images = jax.random.uniform(jax.random.PRNGKey(1), (16, 28, 28, 1))
labels = jnp.arange(16) % 10
arrays = {}
for path in config_paths:
  model = build_model(config_lib.load_config_file(path).model)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  def loss(params):
    logits, _ = model.apply(dict(variables, params=params), images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(2)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits
  step = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(variables["params"]).compile()
  (_, logits), grads = step(variables["params"])
  hlo = step.as_text()
  ynn_bodies = set(re.findall(r"calls=(%[^,\s]+)[^\n]*__ynn_fusion", hlo))
  arrays[path + " convs_in_ynn"] = sum(block.count(" convolution(") for block in hlo.split("\n\n")
                                       if block.split(" ", 1)[0] in ynn_bodies)
  arrays[path + " logits"] = np.asarray(logits)
  for key, leaf in jax.tree_util.tree_leaves_with_path(grads):
    arrays[path + " " + jax.tree_util.keystr(key)] = np.asarray(leaf)
np.savez(out, **arrays)
"""
CONFIGS = ["configs/speedrun.py", "configs/cnn.py"]


def gradients_in_a_fresh_process(out, xla_flags):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags:
    env["XLA_FLAGS"] = xla_flags
  result = subprocess.run([sys.executable, "-c", GRADIENTS_SCRIPT, str(out), *CONFIGS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  return dict(np.load(out))


@pytest.mark.slow
def test_eigen_convolutions_compute_what_ynnpacks_do(tmp_path):
  """`mnist_jax.setup_xla()` compiles no convolution into a YNNPACK fusion, and the
  logits and gradients equal those of YNNPACK's convolutions (XLA's default) up
  to float rounding: the same function, summed in another order."""
  eigen = gradients_in_a_fresh_process(tmp_path / "eigen.npz", None)
  ynn = gradients_in_a_fresh_process(
      tmp_path / "ynn.npz", f"{runtime.YNN_FUSION_FLAG}=+individual_convolution")
  assert eigen.keys() == ynn.keys()
  for path in CONFIGS:
    assert eigen.pop(path + " convs_in_ynn") == 0, path
    assert ynn.pop(path + " convs_in_ynn") > 0, path
  for name in eigen:
    scale = np.abs(ynn[name]).max()
    # + 1e-6: a convolution's bias before batch norm has a gradient of rounding
    # noise (~1e-7), which the norm subtracts again.
    np.testing.assert_allclose(eigen[name], ynn[name], rtol=0, atol=1e-5 * scale + 1e-6,
                               err_msg=name)
