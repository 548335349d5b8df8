"""Where a study's runs train: in this process (`inline`) or as Ray tasks (`ray`).

A job is one run, or a point's seeds trained together (vmap). `inline`
trains the jobs one after another in this process, as studies always did.
`ray` makes each job one Ray task with `cpus_per_run` CPUs and
`gpus_per_run` GPUs (a fraction packs several small runs on one GPU): Ray
starts embedded on this machine (`ray.init()`, ~4-7 s here, 22 s on a
loaded host; listening on 127.0.0.1 only, no dashboard unless asked, see
_start_ray), or joins the cluster at `address` / $RAY_ADDRESS. Each task
runs in a fresh worker process (max_calls=1) whose JAX sees only the task's
devices (Ray sets CUDA_VISIBLE_DEVICES; a task without GPUs gets
JAX_PLATFORMS=cpu), so a run is data-parallel over those devices only.

Either way a job writes its run directories exactly as inline (on a cluster
they must be on a filesystem every node shares), so tables, --tables_only,
ensembles and resume do not know which executor trained a run. A worker that
dies (SIGKILL, a lost node) is retried by Ray up to MAX_RETRIES times and the
run resumes from its newest checkpoint; a job that fails with a UserError is
recorded in its runs' failed.json and the study goes on; `raise_failures`
then ends it with a non-zero exit. One progress line per finished run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from mnist_jax.core import run_dir, runtime
from mnist_jax.core.errors import UserError
from mnist_jax.studies import ray_guard
from mnist_jax.studies.spec import Run

EXECUTORS = ("inline", "ray")
MAX_RETRIES = 3  # Ray's retries of a task whose worker process or node died
Job = Sequence[Run]  # one run, or one point's seeds trained together
# train(job, data) -> the final metrics of each run of the job, in order
TrainJob = Callable[[Job, Any], List[Dict]]


@dataclasses.dataclass(frozen=True)
class Placement:
  """Which executor trains the runs, and each run's share of a Ray cluster."""
  executor: str = "inline"
  address: Optional[str] = None  # a Ray cluster's; None: $RAY_ADDRESS or embedded
  gpus_per_run: float = 0.0
  cpus_per_run: float = 1
  dashboard: bool = False  # a Ray started here: its dashboard (127.0.0.1:8265)

  def check(self) -> None:
    if self.executor not in EXECUTORS:
      raise UserError(f"--executor {self.executor}: use one of {', '.join(EXECUTORS)}.")
    if self.executor == "inline" and self.address:
      raise UserError("--address names a Ray cluster: add --executor ray.")
    if self.gpus_per_run < 0 or self.cpus_per_run <= 0:
      raise UserError(f"--gpus_per_run {self.gpus_per_run} --cpus_per_run "
                      f"{self.cpus_per_run}: use gpus >= 0 and cpus > 0.")
    if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
      raise UserError(f"--gpus_per_run {self.gpus_per_run}: above 1 Ray needs a "
                      "whole number of GPUs.")


@dataclasses.dataclass
class Outcome:
  """What came back from one job: each run's final test accuracy, or why it failed."""
  job: Job
  seconds: float
  accuracies: List[Optional[float]]
  failure: Optional[str] = None


def _where() -> Dict:
  """The process a job trains in, and in a Ray worker its node."""
  where = {"host": socket.gethostname(), "pid": os.getpid()}
  ray = sys.modules.get("ray")  # a Ray worker has imported it; inline need not
  if ray is not None and ray.is_initialized():
    where["node_id"] = ray.get_runtime_context().get_node_id()
  return where


def train_recorded(job: Job, train: TrainJob, data) -> Outcome:
  """Trains one job where it runs (here, or in a Ray worker); a UserError
  becomes the failure of each of its runs, written to their failed.json."""
  runtime.setup_xla()  # a Ray worker is a process of its own
  start = time.perf_counter()
  for run in job:
    run_dir.clear_failure(run.workdir)
    run_dir.update_extras(run.workdir, worker=_where())
  try:
    finals = train(job, data)
  except UserError as e:
    reason = study_advice(str(e), job)
    for run in job:
      run_dir.write_failure(run.workdir, reason)
    return Outcome(job, time.perf_counter() - start, [None] * len(job), reason)
  return Outcome(job, time.perf_counter() - start,
                 [f["test_accuracy"] for f in finals])


# How a run's message names `train`'s flags, and what a study says instead:
# `study` has no --force (deleting the run's folder makes the study train it
# from the start) and names its folder with --out.
_TRAIN_ADVICE = ((r"with `train \.\.\. --force`", "by deleting {folder}"),
                 (r"pass --force", "delete {folder}"),
                 (r"`?(train \.\.\. )?--force`?", "deleting {folder}"),
                 (r"--workdir\b", "--out"))


def study_advice(message: str, job: Optional[Job] = None) -> str:
  """A run's error message (of `job`'s runs, if known) with advice that a
  study can follow."""
  folder = " and ".join(run.workdir for run in job) if job else "that run's folder"
  for pattern, advice in _TRAIN_ADVICE:
    message = re.sub(pattern, advice.format(folder=folder), message)
  return message


class Progress:
  """One line per finished run, with how many are done, in flight and failed."""

  def __init__(self, name: str, total: int, log: Callable):
    self.name, self.total, self.log = name, total, log
    self.done = self.failed = 0

  def report(self, outcome: Outcome, in_flight: int) -> None:
    """`in_flight`: how many other runs are queued or running."""
    for run, accuracy in zip(outcome.job, outcome.accuracies):
      if outcome.failure:
        self.failed += 1
        what = f"FAILED: {outcome.failure}"
      else:
        self.done += 1
        what = f"test accuracy {accuracy:.4f}"
      self.log(f"[{self.name}] {run.point.name} seed {run.seed}: {what} "
               f"({outcome.seconds:.1f} s) | {self.done}/{self.total} done, "
               f"{in_flight} queued or running, {self.failed} failed")


def run_jobs(jobs: Sequence[Job], train: TrainJob, load_data: Callable[[], Any],
             placement: Placement, *, name: str = "study",
             log: Callable = print) -> List[Outcome]:
  """Trains every job with the chosen executor; returns their outcomes."""
  placement.check()
  if not jobs:
    return []
  progress = Progress(name, sum(len(job) for job in jobs), log)
  if placement.executor == "inline":
    outcomes = []
    for i, job in enumerate(jobs):
      outcomes.append(train_recorded(job, train, load_data()))
      progress.report(outcomes[-1], sum(len(j) for j in jobs[i + 1:]))
    return outcomes
  return _run_on_ray(jobs, train, load_data, placement, progress.report)


def _import_ray():
  """Ray is an optional extra (pyproject's `ray`): imported only when chosen."""
  try:
    import ray
  except ImportError:
    raise UserError("--executor ray needs Ray: pip install -e '.[ray]'.") from None
  return ray


def _task_env(placement: Placement) -> Dict[str, str]:
  """The worker's environment: this checkout's mnist_jax first on its path
  (else a worker imports whichever copy is installed), the driver's XLA flags,
  and JAX kept off GPUs the task was not given (CPU only) or from reserving
  75% of a GPU it shares with other runs (fractional GPUs)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
  if os.environ.get("XLA_FLAGS"):
    env["XLA_FLAGS"] = os.environ["XLA_FLAGS"]
  if placement.gpus_per_run == 0:
    env["JAX_PLATFORMS"] = "cpu"
  elif placement.gpus_per_run < 1:
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return env


def _check_resources(ray, placement: Placement) -> None:
  """Refuses a run that no node could hold (Ray would wait for it forever)."""
  nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
  if not any(n.get("CPU", 0) >= placement.cpus_per_run
             and n.get("GPU", 0) >= placement.gpus_per_run for n in nodes):
    most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
    raise UserError(f"no Ray node has {placement.cpus_per_run:g} CPUs and "
                    f"{placement.gpus_per_run:g} GPUs for a run (the largest has "
                    f"{most[0]:g} and {most[1]:g}): lower --cpus_per_run/--gpus_per_run.")


def _start_ray(ray, placement: Placement) -> Optional[subprocess.Popen]:
  """Joins the cluster at --address / $RAY_ADDRESS, or starts Ray on this
  machine: then every Ray server listens on 127.0.0.1 only, there is no
  dashboard unless --ray_dashboard, and a guard (studies/ray_guard.py) ends
  the agents Ray would leave running if this process died. Returns the guard."""
  address = placement.address or os.environ.get("RAY_ADDRESS")
  if address:
    ray.init(address=address)
    return None
  with _loopback_only(ray):  # 'local': a new instance, never a stray one found here
    ray.init(address="local", include_dashboard=placement.dashboard)
  raylet = _child_raylet()
  if raylet is None:
    return None
  return subprocess.Popen([sys.executable, "-m", "mnist_jax.studies.ray_guard",
                           str(raylet)], stdin=subprocess.PIPE, start_new_session=True)


@contextlib.contextmanager
def _loopback_only(ray) -> Iterator[None]:
  """Ray's single-machine mode, in which its node address is 127.0.0.1 and so
  every server it starts binds there. Ray 2.60 has no public option for it:
  `_node_ip_address="127.0.0.1"` is rewritten to the host's address
  (services.resolve_ip_for_localhost), and its GCS, raylet, workers and agents
  listened on 0.0.0.0 (measured with `ss -ltnp`). The mode is macOS's and
  Windows' default, chosen by RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which Ray
  reads when imported (ray_constants.ENABLE_RAY_CLUSTER) and its processes
  inherit."""
  constants = ray._private.ray_constants
  before = os.environ.get(_SINGLE_MACHINE_ENV), constants.ENABLE_RAY_CLUSTER
  os.environ[_SINGLE_MACHINE_ENV] = "0"
  constants.ENABLE_RAY_CLUSTER = False
  try:
    yield
  finally:
    constants.ENABLE_RAY_CLUSTER = before[1]
    if before[0] is None:
      os.environ.pop(_SINGLE_MACHINE_ENV)
    else:
      os.environ[_SINGLE_MACHINE_ENV] = before[0]


_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _child_raylet() -> Optional[int]:
  """The PID of the raylet this process started (Linux's /proc), or None."""
  return next(iter(ray_guard.children(os.getpid(), "raylet")), None)


def _result(ray, ref, job: Job) -> Outcome:
  """The task's outcome; a worker that died more than MAX_RETRIES times (or a
  lost node) fails the job, while an exception of ours (a bug) stops the study
  as it would inline."""
  try:
    return ray.get(ref)
  except ray.exceptions.RayTaskError:
    raise
  except ray.exceptions.RayError as e:
    reason = (f"its Ray worker died {MAX_RETRIES + 1} times "
              f"({type(e).__name__}); see the Ray logs")
    for run in job:
      run_dir.write_failure(run.workdir, reason)
    return Outcome(job, 0.0, [None] * len(job), reason)


def _run_on_ray(jobs: Sequence[Job], train: TrainJob, load_data, placement: Placement,
                report: Callable[[Outcome, int], None]) -> List[Outcome]:
  """One Ray task per job; Ray is started here (and stopped) unless it runs already."""
  ray = _import_ray()
  started = not ray.is_initialized()
  guard = None
  if started:
    guard = _start_ray(ray, placement)
  try:
    _check_resources(ray, placement)
    # max_calls=1: a fresh process per run, so JAX sees only this task's GPUs
    # (a reused worker would keep the devices of its first task).
    task = ray.remote(max_calls=1)(train_recorded).options(
        num_cpus=placement.cpus_per_run, num_gpus=placement.gpus_per_run,
        max_retries=MAX_RETRIES, runtime_env={"env_vars": _task_env(placement)})
    data_ref = ray.put(load_data())  # sent to each node once, not once per run
    # A worker's current directory is not the driver's on another node.
    jobs = [[dataclasses.replace(r, workdir=os.path.abspath(r.workdir)) for r in job]
            for job in jobs]
    pending = {task.remote(job, train, data_ref): job for job in jobs}
    outcomes = []
    while pending:
      [ref], _ = ray.wait(list(pending), num_returns=1)
      outcomes.append(_result(ray, ref, pending.pop(ref)))
      report(outcomes[-1], sum(len(job) for job in pending.values()))
    return outcomes
  finally:
    if started:
      ray.shutdown()
    if guard is not None:
      guard.stdin.close()  # the guard ends what shutdown left, then exits
      guard.wait()


def raise_failures(runs: Sequence[Run]) -> None:
  """Ends a study whose runs failed with one UserError naming each."""
  failed = [(run, run_dir.read_failure(run.workdir)) for run in runs]
  failed = [(run, reason) for run, reason in failed if reason]
  if failed:
    lines = "; ".join(f"{r.point.name} seed {r.seed}: {why}" for r, why in failed)
    raise UserError(f"{len(failed)} of {len(runs)} runs failed ({lines}). Fix the "
                    "cause and run the same command again: finished runs are kept.")
