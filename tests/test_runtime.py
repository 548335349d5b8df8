"""XLA flags set before JAX starts."""

from mnist_jax.core import runtime


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
