"""A Ray cluster of two nodes on localhost runs a study across both nodes.

(That a Ray run equals an inline one, to the bit, is tested on one local Ray
in test_executor_ray.py; here the point is the cluster.)

The nodes are started as a user would (`ray start --head`, then `ray start
--address` with its own resources) and joined with `--executor ray --address`.
They run with --block so that each is stopped through its own process (SIGTERM
makes `ray start --block` stop what it started), not with `ray stop`, which
would stop every Ray instance of this user on the machine.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.studies import runner as study_lib, spec

from helpers import noise_splits

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # two Ray nodes

RAY_CLI = os.path.join(os.path.dirname(sys.executable), "ray")
STUDY = spec.Study("two_nodes", [
    spec.Point("linear", "configs/mlp.py", {"model.hidden_features": ()}),
    spec.Point("mlp8", "configs/mlp.py", {"model.hidden_features": (8,)})])
# Two runs, 1 CPU each, on two nodes of 1 CPU: while one node trains the
# first, Ray must place the second on the other.
PRESET = spec.Preset(seeds=(0,), overrides={
    "num_epochs": 1, "batch_size": 32, "eval_batch_size": 50})


def free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def start_node(args, log_path):
  env = dict(os.environ, RAY_AUTH_MODE="disabled")
  with open(log_path, "w") as log:
    return subprocess.Popen([RAY_CLI, "start", "--block", "--num-cpus=1",
                             "--disable-usage-stats", *args], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_node(proc):
  """SIGTERM to `ray start --block` stops its node; its process group after it."""
  proc.send_signal(signal.SIGTERM)
  try:
    proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  try:
    os.killpg(proc.pid, signal.SIGKILL)  # anything of this node still alive
  except ProcessLookupError:
    pass


def alive_nodes(address, count, timeout=180):
  """The cluster's nodes once `count` are up: {node_id: resources}."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      ray.init(address=address)
    except ConnectionError:
      time.sleep(1)
      continue
    try:
      while time.monotonic() < deadline:
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        if len(nodes) >= count:
          return nodes
        time.sleep(0.5)
    finally:
      ray.shutdown()
  pytest.fail(f"the Ray cluster at {address} did not reach {count} nodes")


@pytest.fixture(scope="module")
def two_nodes():
  """(address, {node_id: resources}) of a head and a second node, 1 CPU each."""
  # Ray's socket paths must stay under 107 characters: a short temp dir.
  temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
  gcs, client, agent_head, agent_2 = free_ports(4)
  address = f"127.0.0.1:{gcs}"
  nodes = [start_node(["--head", f"--port={gcs}", "--include-dashboard=false",
                       f"--ray-client-server-port={client}", f"--temp-dir={temp}",
                       f"--dashboard-agent-listen-port={agent_head}"],
                      os.path.join(temp, "head.log"))]
  try:
    nodes.append(start_node([f"--address={address}", '--resources={"node2": 1}',
                             f"--dashboard-agent-listen-port={agent_2}"],
                            os.path.join(temp, "node2.log")))
    yield address, alive_nodes(address, 2)
  finally:
    for node in reversed(nodes):
      stop_node(node)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def random_mnist(monkeypatch):
  splits = noise_splits(320, 100)
  monkeypatch.setattr(data_lib, "load_mnist", lambda *a, **k: splits)


def test_a_study_joins_the_cluster_by_its_address_and_runs_on_both_nodes(
    two_nodes, random_mnist, tmp_path):
  address, nodes = two_nodes
  lines = []
  runs = study_lib.run_study(STUDY, PRESET, str(tmp_path / "study"), log=lines.append,
                             executor="ray", address=address)
  assert all(study_lib.is_finished(r) for r in runs)
  assert lines[-1].endswith("2/2 done, 0 queued or running, 0 failed")
  ran_on = [run_dir.read_extras(r.workdir)["worker"]["node_id"] for r in runs]
  assert sorted(ran_on) == sorted(nodes)  # one run on each node
  assert any("node2" in nodes[node] for node in ran_on)
