"""The Ray executor on one local Ray with two workers: inline's tables (a study's
and the frontier's), a killed worker.

The tests share one Ray instance (started once for this module, ~5-20 s).
"""

import csv
import os
import signal
import threading
import time

import pytest

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.studies import runner as study_lib, script, spec

from experiments import frontier, kernel_size
from helpers import assert_same_bits, final_params, noise_splits, without_times

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray instance and trainings in its workers

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token notice on a test machine


@pytest.fixture(scope="module")
def local_ray():
  """Two CPUs: two runs at a time, each in its own worker process."""
  ray.init(address="local", num_cpus=2, include_dashboard=False)
  yield
  ray.shutdown()


def table_without_times(stem, time_column="train time"):
  """A table's CSV rows and Markdown lines, the (wall) time column left out."""
  with open(stem + ".csv") as f:  # the CSV splits a mean ± std column in two
    rows = [{k: v for k, v in row.items() if not k.startswith(time_column)}
            for row in csv.DictReader(f)]
  with open(stem + ".md") as f:
    cells = [line.split(" | ") for line in f if line.startswith("|")]
  [at] = [i for i, c in enumerate(cells[0]) if c.strip("|\n ").startswith(time_column)]
  return rows, [c[:at] + c[at + 1:] for c in cells]


@pytest.mark.real_data
def test_kernel_size_quick_on_ray_gives_the_inline_tables(local_ray, tmp_path, mnist_dir):
  # One point of the four (its two seeds train side by side on the two
  # workers) keeps the test short; the machinery is the same for all four.
  study = spec.Study("kernel_size", [p for p in kernel_size.STUDY.points
                                     if p.name == "cnn_k1"])
  tables = {}
  for executor in ("inline", "ray"):
    out = str(tmp_path / executor)
    script.run(study, kernel_size.PRESETS, kernel_size.report, quick=True, out=out,
               mnist_dir=mnist_dir, placement={"executor": executor})
    tables[executor] = table_without_times(os.path.join(out, "tables", "kernel_size"))
    worker = run_dir.read_extras(os.path.join(out, "cnn_k1", "seed_1"))["worker"]
    assert (worker["pid"] == os.getpid()) == (executor == "inline")
  rows, markdown = tables["ray"]
  assert [r["seeds"] for r in rows] == ["2"]
  assert rows == tables["inline"][0]  # accuracy mean and std, to the last digit
  assert markdown == tables["inline"][1]


TINY_MEMBER = '''"""A frontier member for tests: a 16-unit MLP, 1 epoch."""
from mnist_jax.core.config import load_config_file


def get_config():
  config = load_config_file("configs/mlp.py")
  config.model.hidden_features = (16,)
  config.num_epochs = 1
  return config
'''


@pytest.fixture
def random_mnist_splits(monkeypatch):
  """Random 'train' and 'test' splits for everything that loads one: the
  study runner (sent to the workers by Ray) and the ensemble's evaluation."""
  train, test = noise_splits(1000, 300)
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: (train, test))
  monkeypatch.setattr(data_lib, "load_split",
                      lambda split, *a, **k: train if split.startswith("train") else test)


def test_the_frontier_on_ray_gives_the_inline_table_and_bits(
    local_ray, random_mnist_splits, tmp_path, monkeypatch):
  config_file = tmp_path / "tiny_member.py"
  config_file.write_text(TINY_MEMBER)
  members = [frontier.Member(f"seed_{s}", str(config_file), s) for s in (0, 1)]
  monkeypatch.setitem(frontier.RECIPES, "tiny", members)
  tables, outs = {}, {}
  for executor in ("inline", "ray"):
    outs[executor] = str(tmp_path / executor)
    frontier.run("tiny", out=outs[executor], placement={"executor": executor})
    tables[executor] = table_without_times(
        os.path.join(outs[executor], "tables", "frontier"), "training time")
    worker = run_dir.read_extras(os.path.join(outs[executor], "seed_1"))["worker"]
    assert (worker["pid"] == os.getpid()) == (executor == "inline")
  assert tables["ray"] == tables["inline"]  # members and both ensembles
  for member in members:
    ray_run, inline_run = (os.path.join(outs[e], member.name) for e in ("ray", "inline"))
    assert without_times(run_dir.read_metrics(ray_run)) == without_times(
        run_dir.read_metrics(inline_run))
    assert_same_bits(final_params(ray_run), final_params(inline_run))


# 4,000 random images in batches of 20: 200 steps per epoch, checkpoints
# every 50 steps, so a kill in epoch 2 resumes mid-epoch.
KILL_STUDY = spec.Study("kill", [spec.Point("mlp", "configs/mlp.py", {
    "model.hidden_features": (32,), "batch_size": 20, "eval_batch_size": 100,
    "steps_per_dispatch": 1, "checkpoint.every_steps": 50})])
KILL_PRESET = spec.Preset(seeds=(0,), overrides={"num_epochs": 3})


@pytest.fixture
def random_mnist(monkeypatch):
  """The study's data, loaded by the driver and sent to the workers by Ray."""
  splits = noise_splits(4000, 500)
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: splits)


def kill_in_epoch_2(workdir, killed, study_done):
  """SIGKILLs the worker training `workdir` once epoch 2 has a checkpoint; puts
  its pid and the epoch-1 metrics line in `killed`."""
  while not study_done.is_set():
    pid = run_dir.read_extras(workdir).get("worker", {}).get("pid")
    if pid and os.path.isdir(os.path.join(run_dir.checkpoint_dir(workdir), "250")):
      killed.update(pid=pid, epoch_1=run_dir.read_metrics(workdir)[0])
      os.kill(pid, signal.SIGKILL)
      return
    time.sleep(0.01)


def test_a_worker_killed_mid_run_is_retried_and_resumes_to_the_same_bits(
    local_ray, random_mnist, tmp_path):
  inline = study_lib.run_study(KILL_STUDY, KILL_PRESET, str(tmp_path / "inline"), log=len)
  [run] = study_lib.plan(KILL_STUDY, KILL_PRESET, str(tmp_path / "ray"))
  killed, study_done = {}, threading.Event()
  killer = threading.Thread(target=kill_in_epoch_2, args=(run.workdir, killed, study_done))
  killer.start()
  try:
    study_lib.run_study(KILL_STUDY, KILL_PRESET, str(tmp_path / "ray"), log=len,
                        executor="ray")
  finally:
    study_done.set()
    killer.join()
  assert killed, "the run finished before epoch 2 had a checkpoint"
  assert run_dir.read_extras(run.workdir)["worker"]["pid"] != killed["pid"]  # retried
  lines = run_dir.read_metrics(run.workdir)
  assert lines[0] == killed["epoch_1"]  # kept: resumed from the checkpoint, not redone
  assert without_times(lines) == without_times(run_dir.read_metrics(inline[0].workdir))
  assert_same_bits(final_params(run.workdir), final_params(inline[0].workdir))
