"""One command a user types, timed as its own process (speedrun, fixed_costs).

Wall seconds from the start to its exit and, when asked, to the first output
line holding a marker (e.g. `train`'s "final test accuracy", which comes
before the process has torn down); CPU seconds of the process (user + sys:
less inflated than wall time on a busy machine); its output, stdout and
stderr interleaved as a terminal shows them.
"""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import time
from typing import Dict, Optional, Sequence

from mnist_jax.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class Timed:
  wall_s: float  # start to exit
  cpu_s: float  # user + sys of the process
  output: str  # stdout and stderr, interleaved
  marker_s: Optional[float]  # start to the first line holding the marker


def run_timed(argv: Sequence[str], cwd: str, env: Dict[str, str],
              marker: Optional[str] = None) -> Timed:
  """Runs `argv` in `cwd` with `env`, reading its output line by line as it
  comes (unbuffered Python), so that the marker's time is when it was
  printed. A failing command (or one that never prints the marker) raises
  UserError with the command and its last line."""
  env = dict(env, PYTHONUNBUFFERED="1")
  before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
  lines, marker_s = [], None
  with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, cwd=cwd, env=env) as proc:
    for line in proc.stdout:
      lines.append(line)
      if marker and marker_s is None and marker in line:
        marker_s = time.perf_counter() - start
  wall_s = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0 or (marker and marker_s is None):
    last = ([l.strip() for l in lines if l.strip()] or ["(no output)"])[-1]
    what = (f"failed in {cwd} (exit status {proc.returncode})" if proc.returncode
            else f"ended without printing {marker!r}")
    raise UserError(f"`{' '.join(argv[1:])}` {what}: {last}")
  cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return Timed(wall_s, cpu_s, "".join(lines), marker_s)
