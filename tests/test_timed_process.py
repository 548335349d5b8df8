"""tools/timed_process: the one way speedrun and fixed_costs time a command."""

import os
import sys

import pytest

from mnist_jax import UserError
from mnist_jax.tools.timed_process import run_timed

PRINTS_THEN_WAITS = ("import sys, time; print('starting'); "
                     "print('warning', file=sys.stderr); print('final line'); "
                     "time.sleep(0.5)")


def test_the_marker_is_timed_when_printed_not_at_exit(tmp_path):
  timed = run_timed([sys.executable, "-c", PRINTS_THEN_WAITS], str(tmp_path),
                    dict(os.environ), marker="final line")
  assert timed.marker_s is not None and timed.wall_s - timed.marker_s >= 0.4
  assert timed.output.splitlines() == ["starting", "warning", "final line"]
  assert timed.cpu_s > 0


def test_a_failing_command_or_a_missing_marker_is_one_error_with_its_last_line(tmp_path):
  fails = "import sys; print('loading'); sys.exit('error: no such file')"
  with pytest.raises(UserError, match=r"failed in .* \(exit status 1\): error: no such file"):
    run_timed([sys.executable, "-c", fails], str(tmp_path), dict(os.environ))
  with pytest.raises(UserError, match=r"ended without printing 'accuracy': final line"):
    run_timed([sys.executable, "-c", PRINTS_THEN_WAITS], str(tmp_path),
              dict(os.environ), marker="accuracy")
