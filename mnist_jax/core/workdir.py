"""A workdir on disk: a folder that can hold a run, trained by one process at a time.

`locked` is held for the life of a `train` (engine/loop.train_runs); the run
directory's files themselves are read and written by run_dir.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Iterator, Tuple

from mnist_jax.core.errors import UserError

LOCK_FILE = "train.lock"


def write_error(error: OSError, path: str, flag: str = "--workdir") -> UserError:
  """A failed write of `path` as one line that says what to do; `flag` is the
  command's flag that chose the folder."""
  if error.errno == errno.ENOSPC:
    resumes = " (a run resumes from its last checkpoint)" if flag == "--workdir" else ""
    return UserError(f"no space left on the device holding {path}: free some space "
                     f"and run the same command again{resumes}.")
  if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return UserError(f"cannot write {path} ({error.strerror}): make it writable or "
                     f"choose another {flag}.")
  return UserError(f"cannot write {path} ({error.strerror or error}): check the path "
                   "and the disk, then run the same command again.")


def make_workdir(workdir: str) -> str:
  """Creates `workdir` if needed; a UserError if it cannot hold a run."""
  if not workdir or not workdir.strip():
    raise UserError("the workdir is empty (--workdir=): name a folder for the run, "
                    "e.g. --workdir runs/mlp.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f"workdir {workdir} is a file, not a folder: choose another "
                    "--workdir.")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise write_error(e, workdir) from None
  return workdir


@contextlib.contextmanager
def locked(workdir: str, hold: bool = True, flag: str = "--workdir") -> Iterator[None]:
  """Holds `workdir` for this process: a second `train` on it is refused at once.

  An OS lock (fcntl.flock) on <workdir>/train.lock, which holds the holder's
  PID. The kernel drops the lock when its process ends, however it ends
  (SIGKILL included), so a lock is never stale. filelock (PyPI, 4.3.1) takes
  the same flock, but its `pid` reads only its soft-lock fallback (with flock
  it raises AttributeError, tried), so recording the PID would need this file
  handling anyway. Creates the workdir. `hold=False` (a multi-host run's
  processes other than 0, which share the workdir) takes no lock. `flag`:
  the command's flag that names the folder (a study's is --out).
  """
  if not hold:
    yield
    return
  path = os.path.join(make_workdir(workdir), LOCK_FILE)
  fd, created = _open_lock(path)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
      raise UserError(f"{workdir} is being trained by process {holder}: wait for it "
                      f"to finish or stop it, or use another {flag}.") from None
    _write_pid(fd, path, created)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # an unheld lock names no process
  finally:
    os.close(fd)  # releases the flock


def _open_lock(path: str) -> Tuple[int, bool]:
  """(descriptor, whether this call created the file) of the lock file,
  opened without following a link: a planted link to a file elsewhere would
  have that file truncated."""
  for flags, created in ((os.O_CREAT | os.O_EXCL, True), (0, False)):
    try:
      return os.open(path, os.O_RDWR | os.O_NOFOLLOW | flags, 0o644), created
    except FileExistsError:
      continue
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise UserError(f"{path} is a symbolic link (to {os.readlink(path)}), which a "
                        "run directory never holds: delete the link (and check the "
                        "run's other files), then run the same command again.") from None
      raise write_error(e, path) from None
  raise UserError(f"{path} appeared and vanished while being opened: run the same "
                  "command again.")


def _write_pid(fd: int, path: str, created: bool) -> None:
  """Records this process as the holder; a failure (a full disk) removes a
  lock file this process created, so none is left empty."""
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
  except OSError as e:
    if created:
      with contextlib.suppress(OSError):
        os.remove(path)
    raise write_error(e, path) from None
