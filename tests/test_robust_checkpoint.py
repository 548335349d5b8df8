"""A damaged newest checkpoint is skipped for the older one, and the resumed
run ends bitwise equal to an uninterrupted one; a full disk during a save is
one line and the run then resumes; evaluation never creates or deletes.

Runs train in this process on random images (robust_support): a run is
stopped after its save at step 28 (mid-epoch 2 of 2) by an exception, which
keeps checkpoints 20, 21 and 28.
"""

import errno
import glob
import os
import re
import shutil
import types

import numpy as np
import orbax.checkpoint as ocp
import pytest

from mnist_jax import UserError
from mnist_jax.core import run_dir
from mnist_jax.engine import checkpoint
from mnist_jax.engine.loop import train_and_evaluate
from mnist_jax.engine.restore import restore_state

from cli_on_npz import FULL_DISK_ENV
from helpers import (assert_same_bits, final_params, one_error_line, run_cli_on_npz,
                     without_times)
from robust_support import OVERRIDES, random_data, tiny_config


class Stop(Exception):
  """Stands in for a kill right after a save."""


def train(workdir, **kwargs):
  return train_and_evaluate(tiny_config(), str(workdir), data=random_data(),
                            verbose=False, **kwargs)


def stop_after_save(monkeypatch, at_step):
  save = checkpoint.save

  def save_then_stop(mngr, step, *args):
    save(mngr, step, *args)
    if step == at_step:
      raise Stop
  monkeypatch.setattr(checkpoint, "save", save_then_stop)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("robust") / "uninterrupted"
  train(workdir)
  return workdir


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("robust") / "stopped"
  with pytest.MonkeyPatch.context() as mp:
    stop_after_save(mp, 28)
    with pytest.raises(Stop):
      train(workdir)
  assert sorted(checkpoint.manager(str(workdir)).all_steps()) == [20, 21, 28]
  return workdir


def copy_run(source, tmp_path):
  return shutil.copytree(source, tmp_path / "run")


def damage(workdir, how, step=None):
  """Damages checkpoint `step` (the newest by default) in the way `how` names."""
  step = step or checkpoint.manager(str(workdir)).latest_step()
  folder = os.path.join(run_dir.checkpoint_dir(str(workdir)), str(step))
  if how == "truncated":
    data = max(glob.glob(f"{folder}/state/**/d/*", recursive=True), key=os.path.getsize)
    os.truncate(data, os.path.getsize(data) // 2)
  elif how == "no_metadata":
    os.remove(os.path.join(folder, "state", "_METADATA"))
  elif how == "no_progress":
    shutil.rmtree(os.path.join(folder, "progress"))
  return step


def assert_same_run(workdir, reference):
  assert ([m["epoch"] for m in run_dir.read_metrics(workdir)] == [1, 2])
  assert (without_times(run_dir.read_metrics(workdir))
          == without_times(run_dir.read_metrics(reference)))
  assert_same_bits(final_params(workdir), final_params(reference))


@pytest.mark.parametrize("how", ["truncated", "no_metadata", "no_progress"])
def test_resume_skips_a_damaged_newest_checkpoint_and_ends_bitwise_the_same(
    how, stopped, uninterrupted, tmp_path, capfd):
  workdir = copy_run(stopped, tmp_path)
  damage(workdir, how)
  train(workdir)
  notices = [line for line in capfd.readouterr().err.splitlines()
             if "cannot be read" in line]
  assert len(notices) == 1 and "step 28" in notices[0] and "trying step 21" in notices[0]
  assert_same_run(workdir, uninterrupted)


def test_no_readable_checkpoint_is_one_error_that_says_force(stopped, tmp_path):
  """(--force starting over: tests/test_robust_run_dir.py.)"""
  workdir = copy_run(stopped, tmp_path)
  for step in (20, 21, 28):
    damage(workdir, "no_progress", step)
  with pytest.raises(UserError, match=r"no checkpoint in .* can be read \(steps 28, "
                     r"21, 20: damaged, .*`train \.\.\. --force` deletes these"):
    train(workdir)


def test_evaluation_falls_back_too_and_changes_nothing(stopped, tmp_path, capfd):
  workdir = copy_run(stopped, tmp_path)
  damage(workdir, "truncated")
  before = sorted(os.listdir(run_dir.checkpoint_dir(str(workdir))))
  state = restore_state(str(workdir), run_dir.read_config(str(workdir)))
  assert int(state.step) == 21
  assert "step 28" in capfd.readouterr().err
  assert sorted(os.listdir(run_dir.checkpoint_dir(str(workdir)))) == before


def test_evaluating_a_run_without_checkpoints_creates_no_folder(tmp_path):
  workdir = str(tmp_path)
  run_dir.write_config(workdir, tiny_config())
  with pytest.raises(UserError, match="no checkpoint in .*train the run first"):
    restore_state(workdir, tiny_config())
  assert not os.path.exists(run_dir.checkpoint_dir(workdir))


def test_a_best_val_run_without_its_best_checkpoint_is_told_so(tmp_path):
  config = tiny_config(select="best_val", **{"data.validation_size": 100})
  with pytest.raises(UserError, match=r"reports its best validation epoch .* whose "
                     r"checkpoint is missing"):
    restore_state(str(tmp_path), config, which="best")
  assert not os.path.exists(run_dir.best_checkpoint_dir(str(tmp_path)))


def test_a_finished_run_whose_metrics_were_deleted_is_one_error(uninterrupted, tmp_path):
  workdir = copy_run(uninterrupted, tmp_path)
  os.remove(workdir / run_dir.METRICS_FILE)
  with pytest.raises(UserError, match=r"lacks the lines of epoch\(s\) 1, 2"):
    train(workdir)


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
# What orbax raised from the save after the one that filled a tmpfs (measured).
ORBAX_ENOSPC = ValueError("RESOURCE_EXHAUSTED: Failed writing: \"/x/d/4\": Failed to "
                          "write 369 bytes to file 6: No space left on device "
                          "[os_error_code='28']")
FULL_DISK = (r"no space left on the device holding .*checkpoints: free some space and "
             r"run the same command again")


def test_a_full_disk_when_a_save_starts_is_one_line_and_the_run_then_resumes(
    uninterrupted, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 28:
      raise ORBAX_ENOSPC
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(UserError, match=FULL_DISK):
    train(workdir)
  monkeypatch.undo()  # space freed
  train(workdir)
  assert_same_run(workdir, uninterrupted)


@pytest.mark.slow  # two command-line processes
def test_a_disk_that_fills_during_orbax_s_write_is_one_line_without_tracebacks(
    uninterrupted, tmp_path, monkeypatch):
  """The command line, as a user sees it: the disk fills while orbax's
  background threads write step 28's checkpoint (tests/cli_on_npz.py), after
  the free-space check passed. Orbax logged six tracebacks and the command
  died with a seventh (exit 1); now: one `error:` line, exit 2, none of
  orbax's records. Run again once space is freed, it resumes to the same bits."""
  train_split, test_split = random_data()
  data = tmp_path / "random.npz"
  np.savez(data, train_images=train_split.images, train_labels=train_split.labels,
           test_images=test_split.images, test_labels=test_split.labels)
  workdir = tmp_path / "run"
  command = ("train", "--config", "configs/mlp.py", "--workdir", workdir,
             *(f"--config.{key}={value}" for key, value in OVERRIDES.items()))
  monkeypatch.setenv(FULL_DISK_ENV, "28")
  result = run_cli_on_npz(data, *command)
  assert re.match("error: " + FULL_DISK, one_error_line(result))
  assert "os_error_code" not in result.stderr, result.stderr[-3000:]
  monkeypatch.delenv(FULL_DISK_ENV)  # space freed
  again = run_cli_on_npz(data, *command)
  assert again.returncode == 0, again.stderr[-3000:]
  assert_same_run(workdir, uninterrupted)


def test_only_callbacks_into_a_closed_event_loop_are_kept_off_stderr():
  """What a real full tmpfs added (tensorstore writes ending after orbax's save
  coroutine stopped) is dropped; any other unraisable error still shows."""
  shown = []
  hook = checkpoint._closed_loop_callbacks(shown.append)
  closed = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
  other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
  hook(closed)
  hook(other)
  assert shown == [other]


@pytest.mark.parametrize("error", [ENOSPC, ORBAX_ENOSPC], ids=["OSError", "orbax"])
def test_a_full_disk_while_waiting_for_a_save_is_one_line(error, tmp_path, monkeypatch):
  def wait(self):
    raise error
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait)
  with pytest.raises(UserError, match=FULL_DISK):
    checkpoint.finish(checkpoint.manager(str(tmp_path)))


def test_other_orbax_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch):
  def wait(self):
    raise ValueError("something else")
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait)
  with pytest.raises(ValueError, match="something else"):
    checkpoint.finish(checkpoint.manager(str(tmp_path)))


def test_a_save_the_disk_cannot_hold_is_refused_before_it_starts(tmp_path, monkeypatch):
  """4.2 MB of parameters (5 MB + 1 MiB needed), 1 MB free: refused, and orbax
  is never called."""
  usage = shutil.disk_usage(str(tmp_path))
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda path: usage._replace(free=1 << 20))
  monkeypatch.setattr(ocp.CheckpointManager, "save", None)  # would raise TypeError
  state = types.SimpleNamespace(params={"w": np.zeros(1 << 20, np.float32)},
                                opt_state={}, step=np.int32(0))
  with pytest.raises(UserError, match=r"only 1\.0 MB free on the device holding .*"
                     r"needs about 6\.1 MB: free some space and run the same command"):
    checkpoint.save(checkpoint.manager(str(tmp_path)), 1, state, {}, {})
