"""A study: named points (config overrides on a config file) x seeds.

Each run trains in its own directory `<study_dir>/<point>/seed_<k>`. A run is
finished when its metrics.jsonl holds all `num_epochs` epochs; running a study
again skips finished runs and resumes an unfinished one from its newest
checkpoint (train_and_evaluate does that), so an interrupted study is resumed
by running the same command. A point whose config
the model check rejects (an impossible architecture) is recorded as rejected,
not trained. MNIST is loaded once per study and shared by all its runs.
With `vmap_seeds`, the seeds of a point that none has started yet train
together in one vmapped program (engine/loop.train_runs), each seed's result
equal to its separate run up to float rounding; an interrupted group resumes
together, and a run found half-done on its own resumes on its own.
The runs left to train go through an executor (studies/executor.py): in this
process (`inline`, the default) or as Ray tasks (`ray`).
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Dict, List, Optional, Sequence

import jax
import ml_collections

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.engine.loop import train_and_evaluate, train_runs
from mnist_jax.studies import executor as executor_lib
from mnist_jax.studies.results import check_study_dir
from mnist_jax.studies.spec import (Point, Preset, Run, Study, point_config, point_dir,
                                     run_workdir)
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cost import model_cost


def rejection(point: Point, preset: Preset) -> Optional[str]:
  """Why the point's config is impossible, or None if it builds."""
  try:
    build_model(point_config(point, preset, preset.seeds[0]).model)
  except UserError as e:
    return str(e)
  return None


def plan(study: Study, preset: Preset, study_dir: str) -> List[Run]:
  """Every run of the study (rejected points excluded), seeds outermost so that
  an interrupted study has every point at its first seeds."""
  ok = [p for p in study.points if rejection(p, preset) is None]
  return [Run(p, seed, run_workdir(study_dir, p, seed), point_config(p, preset, seed))
          for seed in preset.seeds for p in ok]


def _same_config(workdir: str, config: ml_collections.ConfigDict) -> bool:
  saved = run_dir.read_config(workdir).to_dict()
  return not run_dir.config_differences(saved, run_dir.config_as_dict(config))


def is_finished(run: Run) -> bool:
  """All epochs are in metrics.jsonl, and the run is of this very config."""
  if not run_dir.is_finished(run.workdir, run.config.num_epochs):
    return False
  if not _same_config(run.workdir, run.config):
    raise UserError(f"{run.workdir} holds a finished run of another config: "
                    "use another --out folder for a changed study or preset.")
  return True


def record_extras(run: Run, compile_time_s: Optional[float] = None) -> Dict:
  """Writes what tables need beyond metrics.jsonl into the run's extras.json."""
  metrics = run_dir.read_metrics(run.workdir)
  device = jax.devices()[0]
  extras = dict(model_cost(run.config.model),
                train_time_s=sum(m["train_time_s"] for m in metrics),
                total_epoch_time_s=sum(m["epoch_time_s"] for m in metrics),
                device=(f"{jax.device_count()} x {device.device_kind} "
                        f"({device.platform}), {os.cpu_count()} host cores"))
  if compile_time_s is not None:
    extras["compile_time_s"] = compile_time_s
  return run_dir.update_extras(run.workdir, **extras)


def seed_groups(runs: Sequence[Run]) -> List[List[Run]]:
  """Per point, the runs to train together, when there are two or more: those
  not started yet, or those of a group that was interrupted (their extras'
  `trained_with_seeds`, written as the group starts), which resume together."""
  groups: Dict[tuple, List[Run]] = {}
  for run in runs:
    if not os.path.exists(run.workdir):
      groups.setdefault((run.point.name, None), []).append(run)
    elif not run_dir.is_finished(run.workdir, run.config.num_epochs):
      together = run_dir.read_extras(run.workdir).get("trained_with_seeds")
      if together:
        groups.setdefault((run.point.name, tuple(together)), []).append(run)
  return [group for (_, together), group in groups.items() if len(group) > 1
          and (together is None or tuple(r.seed for r in group) == together)]


def train_job(job: Sequence[Run], data, train_fn: Callable) -> List[Dict]:
  """Trains one run, or a point's seeds together, wherever the executor runs
  it, and records each run's extras; returns their final metrics."""
  if len(job) > 1:
    seeds = [r.seed for r in job]
    for run in job:  # marks the group, so that an interrupted one resumes together
      run_dir.update_extras(run.workdir, trained_with_seeds=seeds)
    finals = train_runs(job[0].config, seeds, [r.workdir for r in job], data=data,
                        verbose=False)
    for run, final in zip(job, finals):
      record_extras(run, final["compile_time_s"])
    return finals
  [run] = job
  final = train_fn(run.config, run.workdir, data=data, verbose=False)
  record_extras(run, final.get("compile_time_s"))
  return [final]


def jobs_left(runs: Sequence[Run], vmap_seeds: bool, log: Callable,
              study_name: str) -> List[List[Run]]:
  """The runs still to train, as jobs: a point's fresh seeds together (with
  `vmap_seeds`, see seed_groups), else one run each. Finished runs are skipped,
  and an earlier failure of theirs is forgotten."""
  jobs = seed_groups(runs) if vmap_seeds else []
  for group in jobs:
    log(f"[{study_name}] {group[0].point.name} seeds {[r.seed for r in group]}: "
        "training together (vmap)")
  together_dirs = {run.workdir for group in jobs for run in group}
  for i, run in enumerate(runs, start=1):
    tag = f"[{study_name} {i}/{len(runs)}] {run.point.name} seed {run.seed}"
    if run.workdir in together_dirs:
      continue
    if is_finished(run):
      log(f"{tag}: finished before, skipped")
      run_dir.clear_failure(run.workdir)  # it failed once, then finished
      if not run_dir.read_extras(run.workdir).get("num_params"):
        record_extras(run)
    else:
      if os.path.exists(run.workdir):
        # train_and_evaluate resumes it from its newest checkpoint: no work lost.
        log(f"{tag}: unfinished run found, resuming it")
      jobs.append([run])
  return jobs


def _splits(runs: Sequence[Run]) -> tuple:
  splits = {(r.config.data.train_split, r.config.data.test_split) for r in runs}
  if len(splits) > 1:
    raise UserError(f"the runs use different data splits {sorted(splits)}: MNIST "
                    "is loaded once for all of them, so give every point the same.")
  return splits.pop()


def data_loader(runs: Sequence[Run], mnist_dir: Optional[str]) -> Callable[[], tuple]:
  """load_data() -> the runs' shared (train, test), loaded on the first call
  only (never, if nothing needs it) and kept."""
  cache = {}

  def load_data():
    if "data" not in cache:
      train_split, test_split = _splits(runs)
      cache["data"] = data_lib.load_mnist(mnist_dir, train_split=train_split,
                                          test_split=test_split)
    return cache["data"]

  return load_data


def train_left(runs: Sequence[Run], name: str, load_data: Callable[[], tuple],
               placement: executor_lib.Placement, *, train_fn: Optional[Callable] = None,
               vmap_seeds: bool = False, log: Callable = print) -> None:
  """Trains the runs not finished yet (jobs_left) with the placement's executor;
  a run that failed is in its failed.json (executor.raise_failures). Studies
  and the frontier both train through here."""
  executor_lib.run_jobs(jobs_left(runs, vmap_seeds, log, name),
                        functools.partial(train_job, train_fn=train_fn or train_and_evaluate),
                        load_data, placement, name=name, log=log)


AfterRun = Callable[[Run, Callable[[], tuple]], None]


def run_study(study: Study, preset: Preset, study_dir: str, *,
              mnist_dir: Optional[str] = None, train_fn: Optional[Callable] = None,
              after_run: Optional[AfterRun] = None, log: Callable = print,
              vmap_seeds: bool = False, executor: str = "inline",
              address: Optional[str] = None, gpus_per_run: float = 0.0,
              cpus_per_run: float = 1, dashboard: bool = False) -> List[Run]:
  """Trains every unfinished run of the study; returns all runs.

  `after_run(run, load_data)` is called for every finished run, old or new
  (e.g. to evaluate it further); `load_data()` gives the shared (train, test).
  `vmap_seeds` trains each point's not-yet-started seeds in one program
  (see seed_groups). `executor` ('inline' or 'ray') and the rest place the
  runs (executor.py); a run that failed is in its failed.json
  (executor.raise_failures).
  """
  placement = executor_lib.Placement(executor, address, gpus_per_run, cpus_per_run,
                                     dashboard)
  placement.check()
  check_study_dir(study_dir)
  for point in study.points:
    reason = rejection(point, preset)
    if reason is not None:
      log(f"[{study.name}] {point.name}: impossible config, not trained: {reason}")
      run_dir.write_rejection(point_dir(study_dir, point), reason)
  runs = plan(study, preset, study_dir)
  load_data = data_loader(runs, mnist_dir)
  train_left(runs, study.name, load_data, placement, train_fn=train_fn,
             vmap_seeds=vmap_seeds, log=log)
  for run in runs:
    if after_run is not None and is_finished(run):
      after_run(run, load_data)
  return runs
