"""Study results read back from run directories only (never from logs).

Statistics over seeds are the mean and the sample standard deviation
(ddof=1, the n-1 estimator); with one seed the std is undefined (NaN).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional


from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.studies.spec import (Point, Preset, Study, point_config, point_dir,
                                     run_workdir)
from mnist_jax.studies.stats import MeanStd, mean_std


@dataclasses.dataclass(frozen=True)
class RunResult:
  seed: int
  workdir: str
  metrics: List[Dict]  # metrics.jsonl, one dict per epoch
  extras: Dict  # extras.json
  select: str = "last"  # config.select: which epoch the run reports
  config: Dict = dataclasses.field(default_factory=dict)  # config.json, 'a.b' keys
  preset: str = ""  # the name of the preset the run was checked against (Preset.name)
  of_preset: bool = False  # whether its config.json is the config that preset gives

  @property
  def final(self) -> Dict:
    """The reported epoch: the last, or the best validation epoch's."""
    return self.metrics[run_dir.selected_index(self.metrics, self.select)]


@dataclasses.dataclass(frozen=True)
class PointResult:
  point: Point
  runs: List[RunResult]  # finished runs only
  rejected: Optional[str] = None  # why the config is impossible

  def final(self, key: str) -> MeanStd:
    """A final (reported-epoch) metric over seeds."""
    return mean_std([r.final[key] for r in self.runs])

  def extra(self, key: str) -> MeanStd:
    return mean_std([r.extras[key] for r in self.runs if key in r.extras])

  def curve(self, key: str) -> List[MeanStd]:
    """A metric per epoch over seeds (epochs all finished runs share)."""
    epochs = min(len(r.metrics) for r in self.runs)
    return [mean_std([r.metrics[e][key] for r in self.runs]) for e in range(epochs)]


def read_run(workdir: str, seed: int) -> Optional[RunResult]:
  """The run in `workdir` if it finished all its epochs, else None."""
  if not os.path.isfile(os.path.join(workdir, run_dir.CONFIG_FILE)):
    return None
  config = run_dir.read_config(workdir)
  if not run_dir.is_finished(workdir, config.num_epochs):
    return None
  metrics = run_dir.read_metrics(workdir)[:config.num_epochs]
  return RunResult(seed, workdir, metrics, run_dir.read_extras(workdir),
                   config.select, run_dir.flat_config(config))


def of_preset(run: RunResult, point: Point, preset: Preset) -> RunResult:
  """The run marked with the preset's name, and whether its config.json is the
  config the preset gives the point (a --quick run is not its full preset's)."""
  if not preset.name:
    return run
  made = run_dir.config_as_dict(point_config(point, preset, run.seed))
  saved = run_dir.config_as_dict(run_dir.read_config(run.workdir))
  return dataclasses.replace(run, preset=preset.name,
                             of_preset=not run_dir.config_differences(saved, made))


def check_study_dir(study_dir: str) -> None:
  """A UserError if `study_dir` cannot hold a study's runs (it is a file)."""
  if os.path.exists(study_dir) and not os.path.isdir(study_dir):
    raise UserError(f"--out {study_dir} is a file, not a folder: choose a folder for "
                    "the study's runs.")


def collect(study: Study, preset: Preset, study_dir: str) -> List[PointResult]:
  """Each point of the study with its finished runs (or its rejection).

  A study folder without one finished or rejected point is a UserError: its
  tables would be empty (e.g. --tables_only before training, or a wrong --out).
  """
  check_study_dir(study_dir)
  results = []
  for point in study.points:
    reason = run_dir.read_rejection(point_dir(study_dir, point))
    runs = [read_run(run_workdir(study_dir, point, s), s) for s in preset.seeds]
    results.append(PointResult(point, [of_preset(r, point, preset) for r in runs if r],
                               reason))
  if not any(r.runs or r.rejected for r in results):
    raise UserError(f"no finished runs of study {study.name!r} in {study_dir}: train "
                    "them first (without --tables_only), or give the study's --out.")
  return results
