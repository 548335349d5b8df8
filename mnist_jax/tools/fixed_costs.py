r"""Fixed costs of the commands a user types: `python -m mnist_jax benchmark --fixed_costs`.

  python -m mnist_jax benchmark --fixed_costs before=../main,after=. \
      --configs configs/mlp.py,configs/speedrun.py --rounds 2 --out runs/fixed_costs.csv

Runs each command in a fresh process of each checkout (cwd and PYTHONPATH set
to it), interleaved (before, after, before, after, ...) so that a noisy
machine slows both alike:

  train --config C --config.num_epochs=1     (each of --configs, a fresh workdir)
  evaluate --workdir <the first config's run>
  predict --workdir <that run> examples/digits/digit3_300x300.png

Each round gives every checkout an empty JAX compilation cache
(JAX_COMPILATION_CACHE_DIR), then runs the commands twice: "cold" (nothing
compiled before) and "warm" (the same commands again). A checkout that does
not enable the cache keeps almost nothing in it (JAX's default threshold is
1 s), so its warm and cold runs are alike. MNIST is read once by each
checkout before the rounds (prepared and, where a checkout keeps them,
decoded arrays cached), so that is not timed.

Per run: wall seconds, CPU seconds (user + sys of the process, which a busy
machine inflates less than wall time), the 1-minute load average before it,
and for `train` the compile seconds it prints, the epoch's seconds
(metrics.jsonl `epoch_time_s`) and `fixed_s` = wall - compile - epochs:
process start to first training step, plus saving at the end.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.tools.timed_process import run_timed

IMAGE = os.path.join("examples", "digits", "digit3_300x300.png")
COLUMNS = ["checkout", "command", "cache", "wall_s", "cpu_s", "compile_s", "epochs_s",
           "fixed_s", "load_1min", "rounds"]


def parse_checkouts(text: str) -> List[Tuple[str, str]]:
  """'before=../main,after=.' -> [(label, folder)]; a UserError if malformed."""
  pairs = [item.split("=", 1) for item in text.split(",") if item]
  if not pairs or any(len(p) != 2 or not all(p) for p in pairs):
    raise UserError(f"--fixed_costs {text!r}: give LABEL=CHECKOUT pairs separated by "
                    "commas, e.g. before=../main,after=.")
  for label, folder in pairs:
    if not os.path.isdir(os.path.join(folder, "mnist_jax")):
      raise UserError(f"--fixed_costs: {folder} ({label}) is not a mnist_jax checkout.")
  return [(label, folder) for label, folder in pairs]


def run_command(checkout: str, args: Sequence[str], cache: str) -> Tuple[float, float, str]:
  """(wall s, CPU s, output) of `python -m mnist_jax ARGS` in `checkout`."""
  env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout),
             JAX_COMPILATION_CACHE_DIR=cache)
  timed = run_timed([sys.executable, "-m", "mnist_jax", *args], checkout, env)
  return timed.wall_s, timed.cpu_s, timed.output


def split_train_time(stdout: str, workdir: str, wall: float) -> Dict[str, float]:
  """compile_s (as `train` printed it), epochs_s (metrics.jsonl) and the rest."""
  found = re.search(r"compiled in ([\d.]+)s", stdout)
  compile_s = float(found.group(1)) if found else float("nan")
  epochs_s = sum(m["epoch_time_s"] for m in run_dir.read_metrics(workdir))
  return {"compile_s": compile_s, "epochs_s": epochs_s,
          "fixed_s": wall - compile_s - epochs_s}


def commands(configs: Sequence[str], root: str, mode: str):
  """[(name, args, workdir of a train or None)] for one pass."""
  runs = [(os.path.splitext(os.path.basename(c))[0], c) for c in configs]
  first = os.path.join(root, f"{runs[0][0]}-{mode}")
  listed = [(f"train {name} 1 epoch", ["train", "--config", config,
                                       "--config.num_epochs=1", "--workdir", workdir],
             workdir) for name, config in runs
            for workdir in [os.path.join(root, f"{name}-{mode}")]]
  return listed + [("evaluate", ["evaluate", "--workdir", first], None),
                   ("predict 1 png", ["predict", "--workdir", first, IMAGE], None)]


def one_pass(label: str, checkout: str, configs: Sequence[str], root: str, mode: str,
             cache: str) -> List[Dict]:
  rows = []
  for name, args, workdir in commands(configs, root, mode):
    load = os.getloadavg()[0]
    wall, cpu, stdout = run_command(checkout, args, cache)
    row = {"checkout": label, "command": name, "cache": mode, "wall_s": wall,
           "cpu_s": cpu, "load_1min": load}
    if workdir:
      row.update(split_train_time(stdout, workdir, wall))
    rows.append(row)
    print(format_row(row), flush=True)
  return rows


def format_row(row: Dict) -> str:
  cells = [row.get(column, "") for column in COLUMNS]
  return " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in cells)


def medians(rows: List[Dict]) -> List[Dict]:
  """The median over rounds of each (checkout, command, cache)."""
  groups: Dict[Tuple, List[Dict]] = {}
  for row in rows:
    groups.setdefault((row["checkout"], row["command"], row["cache"]), []).append(row)
  return [{**{k: same[0][k] for k in ("checkout", "command", "cache")},
           **{k: statistics.median(r[k] for r in same) for k in same[0]
              if isinstance(same[0][k], float)}, "rounds": len(same)}
          for same in groups.values()]


def run(checkouts: str, configs: Sequence[str], rounds: int = 1,
        out: Optional[str] = None) -> List[Dict]:
  """Times every command (module docstring); prints a Markdown table of the
  medians and writes them to `out` (CSV) if given."""
  pairs = parse_checkouts(checkouts)
  if rounds < 1 or not configs:
    raise UserError(f"--rounds {rounds}: time at least 1 round of at least one config.")
  rows: List[Dict] = []
  with tempfile.TemporaryDirectory(prefix="fixed_costs-") as tmp:
    for _, checkout in pairs:  # prepared (and decoded, where kept) before timing
      subprocess.run([sys.executable, "-c", "from mnist_jax.core import data; "
                      "data.load_mnist()"], cwd=checkout, check=True,
                     env=dict(os.environ, PYTHONPATH=os.path.abspath(checkout)))
    for r in range(rounds):
      for label, checkout in pairs:
        root = os.path.join(tmp, f"{label}-{r}")
        for mode in ("cold", "warm"):
          rows += one_pass(label, checkout, configs, root, mode, os.path.join(root, "jax"))
  summary = medians(rows)
  print("\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
  for row in summary:
    print("| " + format_row(row) + " |")
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=COLUMNS)
      writer.writeheader()
      writer.writerows(summary)
    print(f"wrote {out}")
  return summary
