"""Commands declared in the checkout's experiments/ folder: study, frontier.

`experiments/NAME.py` declares a study (STUDY, PRESETS, and optionally report
and after_run_for; studies/catalog.py finds them) or the frontier (run); both
are loaded by path from the checkout, so `python -m mnist_jax study NAME` and
`python experiments/NAME.py` run the same declaration through the same code.
"""

from __future__ import annotations

import types
from typing import List, Optional, Sequence

from absl import flags

from mnist_jax.cli.command import Command, define_data_dir, flag_in
from mnist_jax.cli.runs import parse_seeds
from mnist_jax.core.errors import UserError
from mnist_jax.studies import catalog


def load_experiment(name: str, folder: Optional[str] = None) -> types.ModuleType:
  """experiments/NAME.py (of `folder`, else the checkout's, studies/catalog.py)
  as the module `experiments.NAME`."""
  return catalog.load_file(name, folder)


def _studies_help(argv: Sequence[str]) -> str:
  """The studies the --experiments_dir folder (or the default) declares."""
  folder = flag_in(argv, "experiments_dir")
  found = catalog.find_studies(folder)
  lines = [f"studies in {catalog.folder_or_default(folder)}:"]
  width = max(map(len, found), default=0)
  lines += [f"  {name:{width}s}  {summary}".rstrip() for name, summary in found.items()]
  return "\n".join(lines if found else lines + ["  (none)"])


def _define_out(fv: flags.FlagValues, default: str) -> None:
  flags.DEFINE_string("out", None, f"output folder (default: {default})", flag_values=fv)


def _define_study(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  flags.DEFINE_string("preset", "cpu", "training budget, cpu or full (see the study's "
                      "docstring)", flag_values=fv)
  flags.DEFINE_bool("quick", False, "tiny form for tests: 2 seeds, 1 epoch, 1000/500 "
                    "images", flag_values=fv)
  _define_out(fv, "runs/studies/NAME/PRESET[-quick]")
  define_data_dir(fv)
  flags.DEFINE_bool("vmap_seeds", False, "train each point's seeds together in one "
                    "vmapped program (docs/performance.md says when it is faster)",
                    flag_values=fv)
  flags.DEFINE_bool("tables_only", False, "rebuild tables and figures from the runs, "
                    "train nothing", flag_values=fv)
  flags.DEFINE_list("points", None, "only these points of the study, e.g. cnn_k3,cnn_k5 "
                    "(default: all); its tables then hold these only", flag_values=fv)
  flags.DEFINE_list("seeds", None, "only these seeds, e.g. 0 (default: the preset's)",
                    flag_values=fv)
  flags.DEFINE_string("experiments_dir", None, "the folder of study files (default: "
                      "./experiments, else the checkout's experiments/)", flag_values=fv)
  _define_placement(fv)


def _define_placement(fv: flags.FlagValues) -> None:
  """Where the runs (a study's, the frontier's members) train
  (studies/executor.py, docs/distributed.md)."""
  flags.DEFINE_enum("executor", "inline", ["inline", "ray"], "inline: one run after "
                    "another in this process; ray: each run (or vmapped seed group) a "
                    "Ray task", flag_values=fv)
  flags.DEFINE_string("address", None, "a Ray cluster to join, host:port (default: "
                      "$RAY_ADDRESS, else Ray starts on this machine)", flag_values=fv)
  flags.DEFINE_float("gpus_per_run", 0.0, "GPUs per Ray task (0.25: four runs share "
                     "a GPU)", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("cpus_per_run", 1.0, "CPUs per Ray task", lower_bound=0.0,
                     flag_values=fv)
  flags.DEFINE_bool("ray_dashboard", False, "a Ray started on this machine also "
                    "starts its dashboard (http://127.0.0.1:8265)", flag_values=fv)


def _placement(fv: flags.FlagValues) -> dict:
  return {"executor": fv.executor, "address": fv.address,
          "gpus_per_run": fv.gpus_per_run, "cpus_per_run": fv.cpus_per_run,
          "dashboard": fv.ray_dashboard}


def study(fv: flags.FlagValues, args: List[str]) -> int:
  if len(args) != 1:
    found = ", ".join(catalog.find_studies(fv.experiments_dir)) or "(none)"
    what = f"unknown study {' '.join(args)!r}" if args else "study needs a study name"
    raise UserError(f"{what}: use one of {found}.")
  module = catalog.load_study(args[0], fv.experiments_dir)
  from mnist_jax.studies import script
  script.run(module.STUDY, module.PRESETS, getattr(module, "report", None),
             preset=fv.preset, quick=fv.quick, out=fv.out, mnist_dir=fv.data_dir,
             vmap_seeds=fv.vmap_seeds, tables_only=fv.tables_only,
             after_run_for=getattr(module, "after_run_for", None),
             placement=_placement(fv), points=fv.points,
             seeds=None if fv.seeds is None else parse_seeds(fv.seeds, "the preset's"))
  return 0


def _define_frontier(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  flags.DEFINE_string("recipe", "cpu", "cpu (3 seeds of configs/frontier_cpu.py) or "
                      "full (M3, M5, M7: GPU/TPU)", flag_values=fv)
  _define_out(fv, "runs/frontier/RECIPE")
  define_data_dir(fv)
  flags.DEFINE_bool("tables_only", False, "rebuild the table from finished members, "
                    "train nothing", flag_values=fv)
  _define_placement(fv)


def frontier(fv: flags.FlagValues, args: List[str]) -> int:
  load_experiment("frontier").run(fv.recipe, out=fv.out, mnist_dir=fv.data_dir,
                                  tables_only=fv.tables_only, placement=_placement(fv))
  return 0


COMMANDS = [
    Command("study", "run a study declared in experiments/NAME.py (`study -h` lists "
            "them): train what is unfinished, then write its tables and figures",
            _define_study, study, usage="NAME [flags]", positional="the study's name",
            details=_studies_help),
    Command("frontier", "train the accuracy frontier's members (experiments/frontier.py), "
            "score their ensemble, tabulate them beside published results",
            _define_frontier, frontier, usage="[flags]"),
]
