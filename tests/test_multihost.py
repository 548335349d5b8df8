"""Two JAX processes on localhost, two simulated CPU devices each, train one run.

The pair (`train --multihost`, tests/cli_on_npz.py on 2,000 real MNIST
training images) is compared with one process of four simulated devices:
the same global batch over the same number of devices, so each step sums
the same numbers (in another order across processes: equal to float
rounding). The pair is SIGKILLed in the middle of epoch 2, both processes
are started again, and the resumed run must still end as the one-process
run did; then the pair evaluates the result (`evaluate --multihost`), and
this process (one device) ensembles it with the one-process run.
"""

import glob
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mnist_jax.core import run_dir
from mnist_jax.inference import ensemble

from helpers import CLI_ON_NPZ, REPO, checkpoint_steps, final_params, without_times
from test_resume import wait_for_a_mid_epoch_checkpoint
from test_tensorboard import points, reader
from train_worker import STALL_ENV

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

# 50 steps per epoch of 40 images, 5 per call, a save every 10 steps: the
# pair stalls before saving step 80, so it is killed in epoch 2, after it
# saved step 60 or 70 and before it trained past step 80.
STEPS_PER_EPOCH, STALL_AT = 50, 80
TRAIN = ["train", "--config", "configs/mlp.py", "--config.num_epochs=2",
         "--config.batch_size=40", "--config.steps_per_dispatch=5",
         "--config.checkpoint.every_steps=10", "--config.log_every_steps=10",
         "--config.model.hidden_features=(32,)",
         # The splits of the .npz (conftest's small_data), which `evaluate` reads.
         "--config.data.train_split=train[:2000]", "--config.data.test_split=test[:1000]"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def devices_env(count, extra=None):
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"
  return dict(os.environ, XLA_FLAGS=flags.strip(), **(extra or {}))


STARTED = []  # every process the tests start, killed at the end if still running


def start(command, log, env):
  with open(log, "w") as out:
    STARTED.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT))
  return STARTED[-1]


def start_pair(program, logs, env_extra=None):
  """`program` (a command line) as processes 0 and 1 of a two-process run."""
  multihost = ["--multihost", "--coordinator_address", f"localhost:{free_port()}",
               "--num_processes", "2"]
  env = devices_env(2, env_extra)
  return [start([*program, *multihost, "--process_id", str(i)], f"{logs}.p{i}.log", env)
          for i in (0, 1)]


def finish(procs, logs, timeout=240):
  """Waits for every process; one that fails stops the others (a process
  waits for its peers until JAX's timeouts). Returns each one's output."""
  deadline = time.monotonic() + timeout
  while (any(p.poll() is None for p in procs) and time.monotonic() < deadline
         and not any(p.poll() for p in procs)):
    time.sleep(0.05)
  for p in procs:
    if p.poll() is None:
      p.kill()
  outputs = []
  for i, p in enumerate(procs):
    p.wait()
    outputs.append(pathlib.Path(f"{logs}.p{i}.log").read_text())
    assert p.returncode == 0, f"process {i} of {len(procs)}: {outputs[-1][-3000:]}"
  return outputs


def cli_on_npz(data):
  return [sys.executable, str(CLI_ON_NPZ), str(data)]


@pytest.fixture(scope="module")
def runs(small_data, mnist_dir, tfds_dir, tmp_path_factory):
  """The one-process run and the killed, resumed pair's run, and what was
  seen on the way."""
  try:
    yield train_both_ways(small_data, mnist_dir, tfds_dir,
                          tmp_path_factory.mktemp("multihost"))
  finally:
    for p in STARTED:
      if p.poll() is None:
        p.kill()
        p.wait()


def train_both_ways(small_data, mnist_dir, tfds_dir, tmp):
  """One process alone and the pair at once; the pair killed, resumed, evaluating."""
  one, two, seen = tmp / "one", tmp / "two", {}
  alone = start([*cli_on_npz(small_data), *TRAIN, "--workdir", str(one)],
                tmp / "one.p0.log", devices_env(4))
  pair = start_pair([*cli_on_npz(small_data), *TRAIN, "--workdir", str(two)],
                    tmp / "killed", {STALL_ENV: str(STALL_AT)})
  wait_for_a_mid_epoch_checkpoint(pair[0], two, STEPS_PER_EPOCH, after=STEPS_PER_EPOCH)
  seen["running_when_killed"] = [p.poll() is None for p in pair]
  for p in reversed(pair):  # process 1 first, then the coordinator
    p.send_signal(signal.SIGKILL)
    p.wait()
  seen["killed_at"] = checkpoint_steps(two)[-1]
  seen["epochs_when_killed"] = [m["epoch"] for m in run_dir.read_metrics(two)]
  finish([alone], tmp / "one")
  finish(start_pair([*cli_on_npz(small_data), *TRAIN, "--workdir", str(two)],
                    tmp / "resumed"), tmp / "resumed")
  data_env = {"MNIST_DIR": mnist_dir, "TFDS_DATA_DIR": tfds_dir}
  evaluate = [sys.executable, "-m", "mnist_jax", "evaluate", "--workdir", str(two)]
  seen["evaluated"] = finish(start_pair(evaluate, tmp / "evaluate", data_env),
                             tmp / "evaluate")
  return one, two, seen


def test_a_pair_killed_mid_epoch_resumes_to_the_one_process_run(runs):
  one, two, seen = runs
  assert seen["running_when_killed"] == [True, True]
  assert seen["killed_at"] in (60, 70)  # mid-epoch 2, never past the stall at 80
  assert seen["epochs_when_killed"] == [1]
  lines = run_dir.read_metrics(two)
  assert [m["epoch"] for m in lines] == [1, 2]  # none missing, none twice
  # The gradients' all-reduce adds across processes in another order than
  # within one: equal to float rounding, not bitwise (scripts/two_process_
  # localhost.sh's run: epoch 2's test loss 0.51420612 against 0.51420618).
  alone = without_times(run_dir.read_metrics(one))
  assert without_times(lines) == [
      {k: pytest.approx(v, rel=1e-5) if isinstance(v, float) else v for k, v in m.items()}
      for m in alone]
  for x, y in zip(jax.tree.leaves(final_params(two)), jax.tree.leaves(final_params(one)),
                  strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_events_and_the_grid_are_written_once_by_process_0(runs):
  one, two, seen = runs
  # One events file per life of process 0 (killed, resumed); none from process 1.
  assert len(glob.glob(os.path.join(two, "events.out.tfevents.*"))) == 2
  pair, alone = reader(two), reader(one)
  close = lambda pts: [(step, pytest.approx(value, rel=1e-5)) for step, value in pts]
  for tag in ("epoch/test_accuracy", "epoch/train_loss", "epoch/learning_rate"):
    assert points(pair, tag) == close(points(alone, tag)), tag
  # A kill loses at most the points of its epoch up to the restart step.
  lost = range(STEPS_PER_EPOCH + 1, seen["killed_at"] + 1)
  kept = [p for p in points(alone, "step/train_loss") if p[0] not in lost]
  assert [p for p in points(pair, "step/train_loss") if p[0] not in lost] == close(kept)
  [grid] = pair.Images("misclassified/images")
  [alone_grid] = alone.Images("misclassified/images")
  assert (grid.width, grid.height) == (alone_grid.width, alone_grid.height)


def test_evaluate_on_two_processes_prints_the_one_process_accuracy(runs):
  one, _, seen = runs
  final = run_dir.read_metrics(one)[-1]
  expected = f"test accuracy {final['test_accuracy']:.4f} ({final['test_count']} images)"
  for output in seen["evaluated"]:
    assert expected in output


def test_a_pair_trained_run_ensembles_in_one_process(runs, mnist_dir):
  one, two, _ = runs
  result = ensemble.evaluate_ensemble([str(two), str(one)], "test", mnist_dir)
  finals = [run_dir.read_metrics(w)[-1]["test_accuracy"] for w in (two, one)]
  assert [m["accuracy"] for m in result["members"]] == finals
