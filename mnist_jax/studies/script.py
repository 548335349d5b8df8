"""One study from its declaration to its tables: what `python -m mnist_jax study
NAME` (and `python experiments/NAME.py`) runs.

Trains what is not finished yet, then builds the tables (Markdown, LaTeX, CSV)
under <out>/tables and the figures (PNG, PDF) under <out>/figures from the
run directories. The default <out> is runs/studies/<study>/<preset>[-quick]; the study holds
<out> (its train.lock) while it runs, so a second study on it is refused.
Runs that failed (a UserError) are named after the tables, exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence

from mnist_jax.core import workdir
from mnist_jax.core.errors import UserError
from mnist_jax.studies import executor as executor_lib
from mnist_jax.studies import reports, results as aggregate, runner as study_lib, spec
from mnist_jax.studies.results import check_study_dir

# report(study, preset, study_dir, results) -> paths of the tables and figures written
Report = Callable[[spec.Study, spec.Preset, str,
                   List[aggregate.PointResult]], List[str]]
AfterRunFor = Callable[[spec.Preset], study_lib.AfterRun]


def default_out(study: spec.Study, preset_name: str, quick: bool) -> str:
  return os.path.join("runs", "studies", study.name,
                      preset_name + ("-quick" if quick else ""))


def standard_report(study: spec.Study, preset: spec.Preset, study_dir: str,
                    results: List[aggregate.PointResult]) -> List[str]:
  """The report of a study that declares none: the summary table and figures."""
  return reports.standard_report(study.name, study_dir, results)


def run(study: spec.Study, presets: Dict[str, spec.Preset], report: Optional[Report] = None,
        *, preset: str = "cpu", quick: bool = False, out: Optional[str] = None,
        mnist_dir: Optional[str] = None, vmap_seeds: bool = False,
        tables_only: bool = False, after_run_for: Optional[AfterRunFor] = None,
        placement: Optional[Dict] = None, points: Optional[Sequence[str]] = None,
        seeds: Optional[Sequence[int]] = None) -> List[str]:
  """Trains (unless `tables_only`) and reports one study; returns the files written.

  `quick` is the tiny form for tests (spec.quick: 2 seeds, 1 epoch, 1000/500 images).
  `points` and `seeds` cut the study to a part (spec.part), trained and tabulated
  in the same folder as the whole. `report` defaults to standard_report.
  `placement`: run_study's executor, address, gpus_per_run, cpus_per_run.
  """
  if preset not in presets:
    raise UserError(f"study {study.name} has no preset {preset!r}: use one of "
                    f"{', '.join(sorted(presets))}.")
  chosen = spec.quick(presets[preset]) if quick else presets[preset]
  chosen = dataclasses.replace(chosen, name=preset + (" --quick" if quick else ""))
  study, chosen = spec.part(study, chosen, points, seeds)
  report = report or standard_report
  out = default_out(study, preset, quick) if out is None else out
  if not out.strip():
    raise UserError("--out is empty (--out=): name a folder for the study's runs, or "
                    f"leave --out out for the default ({default_out(study, preset, quick)}).")
  check_study_dir(out)
  executor_lib.Placement(**(placement or {})).check()  # before the lock creates `out`
  # One study at a time per folder: a second is refused at once rather than
  # finding the first one's runs locked and recording them as failed.
  # --tables_only on a folder not made yet takes no lock (it creates nothing).
  try:
    with workdir.locked(out, hold=not tables_only or os.path.isdir(out), flag="--out"):
      runs = [] if tables_only else study_lib.run_study(
          study, chosen, out, mnist_dir=mnist_dir,
          after_run=after_run_for(chosen) if after_run_for else None,
          vmap_seeds=vmap_seeds, **(placement or {}))
      paths = _report(study, chosen, out, report)
  except UserError as e:  # a run's damaged file, read here: advice for `study`
    raise UserError(executor_lib.study_advice(str(e))) from None
  executor_lib.raise_failures(runs)
  return paths


def _report(study: spec.Study, preset: spec.Preset, out: str, report: Report) -> List[str]:
  """Writes the study's tables and figures from its runs, prints the Markdown ones."""
  paths = report(study, preset, out, aggregate.collect(study, preset, out))
  for path in paths:
    if path.endswith(".md"):
      with open(path) as f:
        print(f"\n{path}\n" + f.read())
  print("wrote " + ", ".join(paths))
  return paths
