"""One study from its declaration to its tables: what `python -m mnist_jax study
NAME` (and `python experiments/NAME.py`) runs.

Trains what is not finished yet, then builds the tables (Markdown, LaTeX, CSV)
under <out>/tables and the figures (PNG, PDF) under <out>/figures from the
run directories. The default <out> is runs/studies/<study>/<preset>[-quick].
Runs that failed (a UserError) are named after the tables, exit status 2.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional

from mnist_jax.core.errors import UserError
from mnist_jax.studies import executor as executor_lib
from mnist_jax.studies import results as aggregate, runner as study_lib, spec

# report(study, preset, study_dir, results) -> paths of the tables and figures written
Report = Callable[[spec.Study, spec.Preset, str,
                   List[aggregate.PointResult]], List[str]]
AfterRunFor = Callable[[spec.Preset], study_lib.AfterRun]


def default_out(study: spec.Study, preset_name: str, quick: bool) -> str:
  return os.path.join("runs", "studies", study.name,
                      preset_name + ("-quick" if quick else ""))


def run(study: spec.Study, presets: Dict[str, spec.Preset], report: Report, *,
        preset: str = "cpu", quick: bool = False, out: Optional[str] = None,
        mnist_dir: Optional[str] = None, vmap_seeds: bool = False,
        tables_only: bool = False, after_run_for: Optional[AfterRunFor] = None,
        placement: Optional[Dict] = None) -> List[str]:
  """Trains (unless `tables_only`) and reports one study; returns the files written.

  `quick` is the tiny form for tests (spec.quick: 2 seeds, 1 epoch, 1000/500 images).
  `placement`: run_study's executor, address, gpus_per_run, cpus_per_run.
  """
  if preset not in presets:
    raise UserError(f"study {study.name} has no preset {preset!r}: use one of "
                    f"{', '.join(sorted(presets))}.")
  chosen = spec.quick(presets[preset]) if quick else presets[preset]
  out = out or default_out(study, preset, quick)
  runs = []
  if not tables_only:
    after_run = after_run_for(chosen) if after_run_for else None
    runs = study_lib.run_study(study, chosen, out, mnist_dir=mnist_dir,
                               after_run=after_run, vmap_seeds=vmap_seeds,
                               **(placement or {}))
  results = aggregate.collect(study, chosen, out)
  paths = report(study, chosen, out, results)
  for path in paths:
    if path.endswith(".md"):
      with open(path) as f:
        print(f"\n{path}\n" + f.read())
  print("wrote " + ", ".join(paths))
  executor_lib.raise_failures(runs)
  return paths
