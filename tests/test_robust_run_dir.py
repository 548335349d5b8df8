"""The run directory cannot be corrupted: the workdir lock, whole metric lines,
metrics checked against the checkpoint on resume, bad workdirs and full disks
as one clear error. No training here (tests/test_robust_checkpoint.py trains)."""

import errno
import os
import signal
import subprocess
import sys

import pytest

from mnist_jax import UserError
from mnist_jax.core import run_dir
from mnist_jax.core import workdir as workdir_lib

from robust_support import REPO, tiny_config


def epoch_line(epoch, **values):
  return dict({k: 0.5 for k in run_dir.METRIC_KEYS}, epoch=epoch, **values)


def write_epochs(workdir, epochs, **values):
  for epoch in epochs:
    run_dir.append_metrics(str(workdir), epoch_line(epoch, **values))


def epochs_of(workdir):
  return [m["epoch"] for m in run_dir.read_metrics(str(workdir))]


# --- the lock ---------------------------------------------------------------

def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_freed(tmp_path):
  workdir = str(tmp_path / "run")
  lock = os.path.join(workdir, workdir_lib.LOCK_FILE)
  with workdir_lib.locked(workdir):
    assert open(lock).read().strip() == str(os.getpid())
    # flock conflicts between two open files even within one process.
    with pytest.raises(UserError, match=rf"{workdir} is being trained by process "
                       rf"{os.getpid()}: wait .* or use another --workdir"):
      with workdir_lib.locked(workdir):
        pass
  assert open(lock).read() == ""  # a free lock names nobody
  with workdir_lib.locked(workdir):  # and can be taken again
    pass


HOLD = ("import sys, time; from mnist_jax.core import workdir as workdir_lib\n"
        "with workdir_lib.locked(sys.argv[1]):\n"
        "  print('held', flush=True); time.sleep(300)\n")


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", HOLD, workdir], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"being trained by process {holder.pid}"):
      with workdir_lib.locked(workdir):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
  with workdir_lib.locked(workdir):  # the kernel dropped the dead process's lock
    pass


def test_only_the_writing_process_holds_the_lock(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.locked(workdir):
    with workdir_lib.locked(workdir, hold=False):  # a multi-host run's process > 0
      pass


# --- bad workdirs and write failures ----------------------------------------

def test_a_workdir_that_is_a_file_or_empty_is_one_clear_error(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(UserError, match="is a file, not a folder"):
    with workdir_lib.locked(str(a_file)):
      pass
  with pytest.raises(UserError, match=r"workdir is empty \(--workdir=\)"):
    with workdir_lib.locked(""):
      pass


def test_an_unwritable_workdir_is_one_clear_error(tmp_path, monkeypatch):
  """Simulated: these tests may run as root, who can write a mode-555 folder."""
  def refuse(path, *args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
  monkeypatch.setattr(run_dir.os, "makedirs", refuse)
  with pytest.raises(UserError, match=r"cannot write .*Permission denied.*writable"):
    with workdir_lib.locked(str(tmp_path / "run")):
      pass


def test_a_full_disk_while_writing_metrics_says_free_space_and_run_again(
    tmp_path, monkeypatch):
  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(run_dir.os, "fsync", full)
  with pytest.raises(UserError, match=r"no space left .*metrics\.jsonl: free some "
                     r"space and run the same command again"):
    run_dir.append_metrics(str(tmp_path), epoch_line(1))


# --- metrics.jsonl ----------------------------------------------------------

def test_a_cut_last_line_is_left_out_with_a_notice_and_repaired_on_resume(
    tmp_path, capsys):
  write_epochs(tmp_path, [1, 2])
  path = tmp_path / run_dir.METRICS_FILE
  whole = path.read_bytes()
  assert whole.endswith(b"\n") and whole.count(b"\n") == 2
  path.write_bytes(whole[:-40])  # epoch 2's line cut mid-write
  assert epochs_of(tmp_path) == [1]
  assert "warning:" in capsys.readouterr().err
  run_dir.keep_epochs(str(tmp_path), 1)  # the checkpoint is at the end of epoch 1
  assert path.read_bytes() == whole[:whole.index(b"\n") + 1]
  capsys.readouterr()
  assert epochs_of(tmp_path) == [1] and capsys.readouterr().err == ""  # repaired


def test_a_damaged_line_before_the_last_is_an_error(tmp_path):
  write_epochs(tmp_path, [1, 2])
  path = tmp_path / run_dir.METRICS_FILE
  path.write_text("{not json\n" + path.read_text())
  with pytest.raises(UserError, match=r"line 1 is not an epoch line.*--force"):
    run_dir.read_metrics(str(tmp_path))


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_epochs_missing_behind_the_checkpoint_are_an_error_not_a_gap(tmp_path, damage):
  write_epochs(tmp_path, [1, 2, 3])
  path = tmp_path / run_dir.METRICS_FILE
  if damage == "deleted":
    path.unlink()
  else:
    path.write_bytes(path.read_bytes()[:path.read_bytes().index(b"\n") + 20])
  with pytest.raises(UserError, match=r"lacks the lines of epoch\(s\) "
                     + ("1, 2, 3" if damage == "deleted" else "2, 3")
                     + r".*checkpoint \(after epoch 3\).*--force"):
    run_dir.keep_epochs(str(tmp_path), 3)


def test_lines_past_the_checkpoint_are_dropped(tmp_path):
  write_epochs(tmp_path, [1, 2, 3])
  run_dir.keep_epochs(str(tmp_path), 2)
  assert epochs_of(tmp_path) == [1, 2]


def test_epochs_written_twice_alike_are_kept_once_and_never_extended(tmp_path):
  """Two processes on one workdir (before the lock) wrote 1, 1, 2, 2: the
  same values, other timings."""
  for epoch in (1, 2):
    run_dir.append_metrics(str(tmp_path), epoch_line(epoch, epoch_time_s=1.0))
    run_dir.append_metrics(str(tmp_path), epoch_line(epoch, epoch_time_s=2.0))
  assert not run_dir.is_finished(str(tmp_path), 2)  # tables leave it out
  run_dir.keep_epochs(str(tmp_path), 2)
  lines = run_dir.read_metrics(str(tmp_path))
  assert [(m["epoch"], m["epoch_time_s"]) for m in lines] == [(1, 1.0), (2, 1.0)]
  assert run_dir.is_finished(str(tmp_path), 2)


def test_one_epoch_with_two_different_lines_is_refused(tmp_path):
  write_epochs(tmp_path, [1, 2], test_accuracy=0.9)
  write_epochs(tmp_path, [2], test_accuracy=0.8)
  with pytest.raises(UserError, match="two different lines for epoch 2.*--force"):
    run_dir.keep_epochs(str(tmp_path), 2)


# --- claiming a workdir -----------------------------------------------------

def test_an_invalid_config_json_is_one_clear_error_and_force_replaces_it(tmp_path):
  workdir = str(tmp_path)
  write_epochs(tmp_path, [1])
  (tmp_path / run_dir.CONFIG_FILE).write_text('{"seed": 0,')
  with pytest.raises(UserError, match=r"config\.json is not valid JSON.*--force"):
    run_dir.claim(workdir, tiny_config(), force=False)
  run_dir.claim(workdir, tiny_config(), force=True)
  assert run_dir.read_config(workdir).num_epochs == 2
  assert run_dir.read_metrics(workdir) == []


def test_a_failed_first_start_leaves_the_workdir_free_to_reclaim(tmp_path):
  """config.json, but no epoch line and no checkpoint: nothing to protect."""
  workdir = str(tmp_path)
  run_dir.claim(workdir, tiny_config(**{"data.train_split": "train[:10]"}), force=False)
  (tmp_path / run_dir.CHECKPOINT_DIR / "7.orbax-checkpoint-tmp").mkdir(parents=True)
  run_dir.claim(workdir, tiny_config(), force=False)  # the corrected command
  assert run_dir.read_config(workdir).data.train_split == "train"

  write_epochs(tmp_path, [1])  # now it is a run: another config is refused
  with pytest.raises(UserError, match="another config.*--force"):
    run_dir.claim(workdir, tiny_config(seed=3), force=False)


def test_a_complete_checkpoint_alone_makes_a_run(tmp_path):
  workdir = str(tmp_path)
  run_dir.claim(workdir, tiny_config(), force=False)
  (tmp_path / run_dir.CHECKPOINT_DIR / "20").mkdir(parents=True)
  with pytest.raises(UserError, match="another config"):
    run_dir.claim(workdir, tiny_config(seed=3), force=False)


def test_an_invalid_extras_json_is_one_clear_error(tmp_path):
  (tmp_path / run_dir.EXTRAS_FILE).write_text("{")
  with pytest.raises(UserError, match=r"extras\.json is not valid JSON"):
    run_dir.read_extras(str(tmp_path))


def test_force_starts_the_run_over_even_with_the_same_config(tmp_path):
  """The way out that damaged-metrics and damaged-checkpoint errors name."""
  run_dir.claim(str(tmp_path), tiny_config(), force=False)
  write_epochs(tmp_path, [1])
  (tmp_path / run_dir.CHECKPOINT_DIR / "20").mkdir(parents=True)
  run_dir.claim(str(tmp_path), tiny_config(), force=False)  # a resume keeps them
  assert epochs_of(tmp_path) == [1]
  run_dir.claim(str(tmp_path), tiny_config(), force=True)
  assert epochs_of(tmp_path) == [] and not (tmp_path / run_dir.CHECKPOINT_DIR).exists()
