"""Adding a metric as docs/extending.md says: a train step variant in the
user's working directory, named by config.train_step, measures one more
thing, and that key reaches metrics.jsonl, TensorBoard and the epoch line
with nothing else edited."""

import math
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import CLI_ON_NPZ, REPO, one_error_line, write_noise_npz
from mnist_jax.core import run_dir

# The variant of docs/extending.md, "Adding a metric".
MY_STEPS = '''
import optax

from mnist_jax.engine import steps


def train_step(state, batch, rng, **options):
  """The built-in step, plus the norm of the weights after the update."""
  state, metrics = steps.train_step(state, batch, rng, **options)
  metrics["weight_norm"] = optax.global_norm(state.params) * metrics["count"]
  return state, metrics
'''


@pytest.mark.slow  # one command-line process that trains
def test_a_measurement_of_a_step_variant_is_written_everywhere(tmp_path):
  (tmp_path / "my_steps.py").write_text(MY_STEPS)
  data, workdir = tmp_path / "noise.npz", tmp_path / "run"
  write_noise_npz(data, train=512, test=100)
  command = [sys.executable, str(CLI_ON_NPZ), str(data), "train",
             "--config", str(REPO / "configs" / "mlp.py"), "--workdir", str(workdir),
             "--config.train_step=my_steps:train_step", "--config.num_epochs=2",
             "--config.batch_size=64", "--config.log_misclassified=0"]
  result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, check=False)  # the user's folder, not the checkout
  assert result.returncode == 0, result.stderr[-3000:]
  lines = run_dir.read_metrics(str(workdir))
  norms = [m["train_weight_norm"] for m in lines]
  assert len(norms) == 2 and all(math.isfinite(n) and n > 0 for n in norms)
  assert norms[0] != norms[1]  # each epoch's own mean
  events = EventAccumulator(str(workdir), size_guidance={"scalars": 0})
  events.Reload()
  assert [(e.step, pytest.approx(e.value, rel=1e-6))
          for e in events.Scalars("epoch/train_weight_norm")] == [
              (m["step"], m["train_weight_norm"]) for m in lines]
  for m in lines:
    assert f"weight_norm {m['train_weight_norm']:.4f}" in result.stdout


def test_a_train_step_that_cannot_be_loaded_is_one_error_line(cli_here, tmp_path):
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir", tmp_path / "run",
                    "--config.train_step=no_such_module:train_step")
  assert "'no_such_module:train_step' cannot be loaded" in one_error_line(result)
  assert not (tmp_path / "run").exists()  # refused before the workdir is made
