r"""The accuracy frontier: a recipe's members, their ensemble, and the published numbers.

  python experiments/frontier.py --recipe cpu    # 3 seeds of configs/frontier_cpu.py
  python experiments/frontier.py --recipe full   # M3, M5, M7 (configs/m3.py ...): GPU/TPU

Trains each member in `<out>/<member>` (a restarted script skips finished
members and resumes an unfinished one from its checkpoint), scores the
ensemble of the members on the test set (averaged probabilities and majority
vote, `mnist_jax ensemble`), and writes `<out>/tables/frontier.{md,tex,csv}`:
our single models (each, and mean ± std) and ensembles beside the published
numbers, with parameters, training time and how each number was selected.
Default `--out`: runs/frontier/<recipe>.

The members train through the study runner (studies/runner.train_left), so
`--executor ray [--address A] [--gpus_per_run F] [--cpus_per_run N]` places
them as Ray tasks exactly as for a study (docs/distributed.md), and a member
that fails is recorded in its failed.json while the others go on; the script
then ends with one `error:` line naming it (exit 2), before the ensemble.

Measured: the `cpu` recipe on the project's 2-core CPU, 92-94 min per seed
while sharing the cores, 29.8-31.9 on a quiet host (RESULTS.md, section 6,
2026-11-30: 99.67 / 99.72 / 99.73% single, mean 99.71%; ensemble 99.78% by
averaged probabilities, 99.75% by vote). The `full` recipe (150 epochs of M3,
M5 and M7) is meant for a GPU/TPU and has no measured result yet.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, NamedTuple, Optional, Sequence

from mnist_jax.inference import ensemble
from mnist_jax.core import run_dir
from mnist_jax.studies.spec import Point, Run
from mnist_jax.studies.stats import mean_std
from mnist_jax.core.config import load_config_file
from mnist_jax.core.errors import UserError
from mnist_jax.core.models.cost import model_cost
from mnist_jax.studies.tables import Column, Table


class Member(NamedTuple):
  name: str  # its run directory under --out
  config_path: str
  seed: int


RECIPES: Dict[str, List[Member]] = {
    "cpu": [Member(f"seed_{s}", "configs/frontier_cpu.py", s) for s in (0, 1, 2)],
    "full": [Member(m, f"configs/{m}.py", 0) for m in ("m3", "m5", "m7")],
}

def selection(config) -> str:
  """How a member's reported epoch was chosen, from its config."""
  if config.select == "best_val":
    return (f"best accuracy on the last {config.data.validation_size:,} training "
            "images (held out)")
  return "last epoch, no selection"

# Published test accuracies (%), as reported by their authors.
PUBLISHED = [
    ("An et al. 2020: M3, M5, M7, majority vote", 99.87,
     "best test epoch per run (selection on the test set)"),
    ("An et al. 2020: two-level ensemble", 99.91,
     "best test epoch per run (selection on the test set)"),
    ("Ciresan et al. 2012: 35-net committee", 99.77, "as published"),
    ("Wan et al. 2013: DropConnect", 99.79, "as published"),
    ("Byerly et al.: single model", 99.83, "as published"),
    ("Byerly et al.: ensemble", 99.87, "as published"),
]


def member_config(member: Member):
  config = load_config_file(member.config_path)
  config.seed = member.seed
  return config


def member_runs(members: Sequence[Member], out: str) -> List[Run]:
  """The members as the study runner's runs, each in `<out>/<member>`."""
  return [Run(Point(m.name, m.config_path), m.seed, os.path.join(out, m.name),
              member_config(m)) for m in members]


def train_members(members: Sequence[Member], out: str, mnist_dir=None,
                  placement: Optional[Dict] = None) -> List[str]:
  """Trains (or resumes, or skips) every member through the study runner and
  its executor (`placement`: executor, address, gpus_per_run, cpus_per_run);
  returns their run directories. A member that fails is recorded in its
  failed.json, the others go on, then one UserError names it."""
  from mnist_jax.core import workdir
  from mnist_jax.studies import executor, runner
  runs = member_runs(members, out)
  where = executor.Placement(**(placement or {}))
  where.check()  # before the lock creates `out`
  with workdir.locked(out, flag="--out"):  # a second frontier on `out` is refused
    runner.train_left(runs, "frontier", runner.data_loader(runs, mnist_dir), where)
  executor.raise_failures(runs)
  return [run.workdir for run in runs]


def member_row(member: Member, workdir: str) -> Dict:
  config = run_dir.read_config(workdir)
  lines = run_dir.read_metrics(workdir)
  chosen = lines[run_dir.selected_index(lines, config.select)]
  return {"name": f"{member.config_path} seed {member.seed}",
          "accuracy": 100 * chosen["test_accuracy"], "epoch": chosen["epoch"],
          "params": model_cost(config.model)["num_params"],
          "selection": selection(config),
          "minutes": sum(m["epoch_time_s"] for m in lines) / 60}


def frontier_table(recipe: str, members: Sequence[Member], workdirs: Sequence[str],
                   result: Dict) -> Table:
  rows = [member_row(m, w) for m, w in zip(members, workdirs)]
  params = sum(r["params"] for r in rows)
  minutes = sum(r["minutes"] for r in rows)
  ours = f"ours, `{recipe}` recipe"
  table_rows = [[f"{ours}: {r['name']}", r["params"], r["accuracy"],
                 f"{r['minutes']:.1f}", f"{r['selection']} (epoch {r['epoch']})"]
                for r in rows]
  table_rows.append([f"{ours}: single model, mean ± std (n={len(rows)})",
                     rows[0]["params"] if len({r['params'] for r in rows}) == 1 else None,
                     mean_std([r["accuracy"] for r in rows]),
                     f"{minutes / len(rows):.1f} each", rows[0]["selection"]])
  for how in ("average", "vote"):
    label = {"average": "averaged probabilities", "vote": "majority vote"}[how]
    table_rows.append([f"{ours}: ensemble of {len(rows)}, {label}", params,
                       100 * result[how]["accuracy"], f"{minutes:.1f} total",
                       "members as above; nothing chosen by test accuracy"])
  table_rows += [[name, None, acc, None, how] for name, acc, how in PUBLISHED]
  columns = [Column("model"), Column("parameters", ",d"),
             Column("test accuracy (%)", ".2f"), Column("training time (min)"),
             Column("checkpoint selection")]
  return Table(columns, table_rows, caption=(
      f"Accuracy frontier, `{recipe}` recipe: our runs (training time = sum of "
      "the epochs' wall time, evaluation included) beside published numbers."))


def run(recipe: str = "cpu", out: Optional[str] = None, mnist_dir: Optional[str] = None,
        tables_only: bool = False, placement: Optional[Dict] = None) -> List[str]:
  """Trains the recipe's members (unless `tables_only`; `placement` as for a
  study), scores their ensemble, writes the frontier table; returns the
  table's paths."""
  if recipe not in RECIPES:
    raise UserError(f"--recipe {recipe}: use one of {', '.join(sorted(RECIPES))}.")
  members = RECIPES[recipe]
  out = os.path.join("runs", "frontier", recipe) if out is None else out
  if not out.strip():
    raise UserError("--out is empty (--out=): name a folder, or leave --out out for "
                    f"the default (runs/frontier/{recipe}).")
  if tables_only:
    workdirs = [os.path.join(out, m.name) for m in members]
    missing = [w for w, m in zip(workdirs, members)
               if not run_dir.is_finished(w, member_config(m).num_epochs)]
    if missing:
      raise UserError(f"unfinished members {missing}: run without --tables_only first.")
  else:
    workdirs = train_members(members, out, mnist_dir, placement)
  result = ensemble.evaluate_ensemble(workdirs, "test", mnist_dir)
  print(ensemble.format_table(result))
  ensemble.write_result(result, out)
  paths = frontier_table(recipe, members, workdirs, result).write(
      os.path.join(out, "tables"), "frontier")
  with open(paths[0]) as f:
    print(f.read())  # the Markdown table
  print("wrote " + ", ".join(paths))
  return paths


if __name__ == "__main__":  # the same as `python -m mnist_jax frontier ...`
  from mnist_jax import cli
  cli.run(["frontier", *sys.argv[1:]])
