r"""Builds RESULTS.md from the studies' run directories (never from logs).

  python experiments/make_results.py [--preset cpu] [--studies_dir runs/studies]
  python experiments/make_results.py --readme    # the README's results table


For each study it rebuilds the tables and figures from the run directories
(`python -m mnist_jax study <study> --preset P --tables_only`) of every study
declared in experiments/ (studies/catalog.py), then writes RESULTS.md:
each table as the study wrote it, the command that made it, the hardware, the
date the runs finished, and what the table shows in words, read from
experiments/findings/<table>.md (frontier_<recipe>.md for the frontier). PNG
figures are copied to docs/figures/. A study that has not been run is listed
as such, with its command. The accuracy frontier's tables are
experiments/frontier.py's (runs/frontier/<recipe>/tables/frontier.md).

`--readme` prints the README's results table from results/runs.json, the
record of the measured single-config runs, and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This checkout's package, the one `python -m mnist_jax` imports in REPO
# (rebuild_tables), whatever else is installed.
if REPO not in sys.path:
  sys.path.insert(0, REPO)
from mnist_jax.studies import catalog  # noqa: E402

EXPERIMENTS_DIR = os.path.join(REPO, "experiments")
FINDINGS_DIR = os.path.join(EXPERIMENTS_DIR, "findings")
RUNS_RECORD = os.path.join(REPO, "results", "runs.json")


def title(study: str) -> str:
  """The study's section heading: its STUDY.title, else its name."""
  return catalog.load_study(study, EXPERIMENTS_DIR).STUDY.title or study


def studies() -> list:
  """The studies declared in experiments/, in the order of their titles'
  leading numbers ("3. Kernel-size ablation"); titles without one come last."""
  def order(name):
    number = re.match(r"(\d+)\.", title(name))
    return (int(number.group(1)) if number else float("inf"), name)
  return sorted(catalog.find_studies(EXPERIMENTS_DIR), key=order)


def read_finding(name: str) -> str:
  """The prose of experiments/findings/<name>.md, one line per paragraph.

  Findings are written by hand after reading the numbers (keep them true when
  the runs change); the files are wrapped for editing, RESULTS.md keeps each
  paragraph on one line. A missing file is said so in RESULTS.md and on stderr.
  """
  path = os.path.join(FINDINGS_DIR, f"{name}.md")
  if not os.path.exists(path):
    rel = os.path.relpath(path, REPO)
    print(f"warning: no findings file {rel}", file=sys.stderr)
    return f"No findings written for this table yet ({rel} is missing)."
  with open(path) as f:
    paragraphs = f.read().strip().split("\n\n")
  return "\n\n".join(" ".join(line.strip() for line in p.splitlines())
                     for p in paragraphs)


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def hardware() -> str:
  import jax
  cpu = cpu_name()
  return (f"{os.cpu_count()}-core {cpu} CPU, {platform.system()}; JAX {jax.__version__} "
          f"on {jax.default_backend()} ({jax.device_count()} device)")


def finished_date(study_dir: str) -> str:
  stamps = [os.path.getmtime(p) for p in
            glob.glob(os.path.join(study_dir, "*", "seed_*", "metrics.jsonl"))]
  if not stamps:
    return "not run"
  return datetime.date.fromtimestamp(max(stamps)).isoformat()


def rebuild_tables(study: str, preset: str, study_dir: str) -> None:
  subprocess.run([sys.executable, "-m", "mnist_jax", "study", study, "--preset", preset,
                  "--out", study_dir, "--tables_only", "--experiments_dir",
                  EXPERIMENTS_DIR], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def study_section(study: str, preset: str, study_dir: str, figures_out: str) -> str:
  command = f"python experiments/{study}.py --preset {preset}"
  lines = [f"## {title(study)}", "",
           f"Command: `{command}`; runs finished {finished_date(study_dir)}.", ""]
  tables = sorted(glob.glob(os.path.join(study_dir, "tables", "*.md")))
  if finished_date(study_dir) == "not run" or not tables:
    return "\n".join(lines + ["Not run yet.", ""])
  for path in tables:
    name = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
      lines += [f.read().strip(), "", read_finding(name), ""]
  for png in sorted(glob.glob(os.path.join(study_dir, "figures", "*.png"))):
    target = os.path.join(figures_out, os.path.basename(png))
    shutil.copyfile(png, target)
    rel = os.path.relpath(target, REPO)
    lines += [f"![{os.path.basename(png)}]({rel})", ""]
  return "\n".join(lines)


FRONTIER_TITLE = "Accuracy frontier: our recipes beside published results"
# Earlier versions of the `cpu` recipe, newest first: their run folders under
# runs/frontier, each described in experiments/findings/frontier_<folder>.md.
# Their tables stay, so the history of the recipe is in the open.
EARLIER_CPU_RECIPES = ("cpu_v2", "cpu_affine")


def frontier_table_text(run_folder: str) -> str:
  with open(os.path.join(run_folder, "tables", "frontier.md")) as f:
    return f.read().strip()


def frontier_section(frontier_dir: str) -> str:
  """The frontier table of each recipe that has been run (experiments/frontier.py)."""
  lines = [f"## {len(studies()) + 1}. {FRONTIER_TITLE}", ""]  # after the studies
  for recipe in ("cpu", "full"):
    command = f"python experiments/frontier.py --recipe {recipe}"
    table = os.path.join(frontier_dir, recipe, "tables", "frontier.md")
    lines += [f"### `{recipe}` recipe", "", f"Command: `{command}`.", ""]
    if not os.path.exists(table):
      lines += ["Not run yet" + (": it needs a GPU or TPU."
                                 if recipe == "full" else "."), ""]
      continue
    lines += [frontier_table_text(os.path.join(frontier_dir, recipe)), "",
              read_finding(f"frontier_{recipe}"), ""]
    if recipe == "cpu":
      lines += earlier_cpu_recipes(frontier_dir)
  return "\n".join(lines)


def earlier_cpu_recipes(frontier_dir: str) -> list:
  lines = ["#### Earlier versions of the `cpu` recipe", ""]
  for folder in EARLIER_CPU_RECIPES:
    if os.path.exists(os.path.join(frontier_dir, folder, "tables", "frontier.md")):
      lines += [read_finding(f"frontier_{folder}"), "",
                frontier_table_text(os.path.join(frontier_dir, folder)), ""]
  return lines + [read_finding("frontier_cpu_elastic"), ""]


def readme_table(record_path: str = RUNS_RECORD) -> str:
  """The README's results table: the hardware, one row per config, its notes."""
  with open(record_path) as f:
    record = json.load(f)
  lines = [f"Measured on {record['hardware']}.", "",
           "| config | epochs | test accuracy | wall time | command |",
           "| --- | --- | --- | --- | --- |"]
  notes = []
  for i, run in enumerate(record["runs"], 1):
    lines.append(f"| `{run['config']}` | {run['epochs']} | {run['test_accuracy']} | "
                 f"{run['wall_time']} [{i}] | `{run['command']}` |")
    notes.append(f"- [{i}] {run['measured']}: {run['note']}.")
  return "\n".join(lines + [""] + notes)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="cpu", choices=("cpu", "full"))
  parser.add_argument("--studies_dir", default=os.path.join(REPO, "runs", "studies"))
  parser.add_argument("--frontier_dir", default=os.path.join(REPO, "runs", "frontier"))
  parser.add_argument("--conditions", default="", help="a sentence on the machine's "
                      "state during the runs (e.g. shared with other jobs)")
  parser.add_argument("--readme", action="store_true", help="print the README's "
                      "results table (from results/runs.json) and nothing else")
  args = parser.parse_args()
  if args.readme:
    print(readme_table())
    return
  figures_out = os.path.join(REPO, "docs", "figures")
  os.makedirs(figures_out, exist_ok=True)
  sections = []
  for study in studies():
    study_dir = os.path.join(args.studies_dir, study, args.preset)
    if os.path.isdir(study_dir):
      rebuild_tables(study, args.preset, study_dir)
    sections.append(study_section(study, args.preset, study_dir, figures_out))
  sections.append(frontier_section(args.frontier_dir))
  header = [
      "# Results", "",
      f"Every table below was built by `python experiments/make_results.py "
      f"--preset {args.preset}` from the run directories of the `{args.preset}` "
      "preset of each study (mean ± sample std over seeds, ddof=1; n = number of "
      "seeds). Hardware: " + hardware() + ". " + args.conditions, ""]
  with open(os.path.join(REPO, "RESULTS.md"), "w") as f:
    f.write("\n".join(header + sections))
  print(f"wrote {os.path.join(REPO, 'RESULTS.md')}")


if __name__ == "__main__":
  main()
