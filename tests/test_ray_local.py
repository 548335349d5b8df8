"""The Ray a study starts on this machine: every server on 127.0.0.1, no
dashboard, and nothing left running when its driver is killed."""

import os
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from mnist_jax.studies import executor, ray_guard  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A study's driver as far as Ray goes: it starts Ray as `study --executor ray` does.
DRIVER = """
import time
from mnist_jax.studies import executor
ray = executor._import_ray()
executor._start_ray(ray, executor.Placement("ray"))
print(executor._child_raylet(), flush=True)
time.sleep(600)
"""
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1", "::1")


def alive(pids):
  def running(pid):
    try:
      return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
      return False
  return [pid for pid in pids if running(pid)]


@pytest.mark.slow
def test_a_local_ray_listens_on_loopback_only_and_ends_with_its_driver():
  driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO))
  try:
    raylet = int(driver.stdout.readline())
    time.sleep(3)  # the raylet's agents start beside it
    ours = {driver.pid, *(p.pid for p in psutil.Process(driver.pid).children(recursive=True))}
    ours |= set(ray_guard.children(raylet))
    listening = [c for c in psutil.net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert len(listening) >= 4  # GCS, raylet, workers, agents
    assert {c.laddr.ip for c in listening} <= set(LOOPBACK), listening
    assert 8265 not in {c.laddr.port for c in listening}  # no dashboard
  finally:
    driver.kill()  # SIGKILL: no shutdown, no atexit
    driver.wait()
  deadline = time.monotonic() + 30
  while alive(ours - {driver.pid}) and time.monotonic() < deadline:
    time.sleep(0.5)
  # Unguarded, the agents listen on for 60-120 s after their raylet is killed.
  assert alive(ours - {driver.pid}) == []
  assert time.monotonic() < deadline - 15  # gone within seconds
