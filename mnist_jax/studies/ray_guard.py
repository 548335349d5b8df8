"""Ends what a study's local Ray leaves behind when its driver dies.

The driver starts Ray's processes as its children, and the kernel kills them
when it dies (Ray's fate sharing, SIGKILL). The raylet's agents
(DashboardAgent, RuntimeEnvAgent) are the raylet's children: they see it go,
take its death for a crash, and wait up to 60 s each to report it to a GCS
that is gone too (ray 2.60, `publish_error_to_driver`), listening all the
while (measured: 60-120 s). This guard, a process of its own session (a
Ctrl-C of the terminal does not reach it), notes the raylet's children each
second while the driver lives, and when its stdin closes (the driver ended,
however it ended) kills those still running: the same PID and start time,
so never a process that took a freed PID.

  python -m mnist_jax.studies.ray_guard RAYLET_PID   (stdin: a pipe from the driver)
"""

from __future__ import annotations

import os
import select
import signal
import sys
from typing import Dict, Optional, Tuple

POLL_S = 1.0


def _stat(pid: int) -> Optional[Tuple[str, int, int]]:
  """(command name, parent PID, start time in clock ticks) of `pid` from
  /proc; None if gone."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      head, tail = f.read().rsplit(")", 1)  # the name may hold ')' itself
  except (OSError, ValueError):
    return None
  fields = tail.split()
  return head.split("(", 1)[-1], int(fields[1]), int(fields[19])


def children(parent: int, command: Optional[str] = None) -> Dict[int, int]:
  """{PID: start time} of the processes whose parent is `parent` (and whose
  command name is `command`, if given); {} without /proc."""
  found = {}
  for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
    stat = _stat(int(name)) if name.isdigit() else None
    if stat is not None and stat[1] == parent and command in (None, stat[0]):
      found[int(name)] = stat[2]
  return found


def main(raylet: int) -> None:
  seen: Dict[int, int] = {}
  while True:
    seen.update(children(raylet))
    readable, _, _ = select.select([sys.stdin], [], [], POLL_S)
    if readable and not os.read(sys.stdin.fileno(), 4096):
      break  # the driver closed the pipe, or died
  for pid, started in seen.items():
    stat = _stat(pid)
    if stat is not None and stat[2] == started:
      try:
        os.kill(pid, signal.SIGKILL)
      except OSError:
        pass


if __name__ == "__main__":
  main(int(sys.argv[1]))
