r"""The speedrun end to end: `python -m mnist_jax speedrun [--seeds 0,1,2,3,4]`.

Each seed is the command a user types, run as its own process:

  python -m mnist_jax train --config configs/speedrun.py --workdir OUT/seedS \
      --config.seed=S --force

timed from the moment the process is started to the moment it prints its final
test accuracy ("end to end": Python and JAX start-up, loading MNIST, compiling,
training, evaluating). The seeds run one after another, so each has the
machine to itself. Per seed the table lists the test accuracy of the run's
reported epoch, the training time (metrics.jsonl's `train_time_s`, summed
over epochs: the steps alone) and the end-to-end time; below it the mean
accuracy and how many seeds fall below the target (99.0%).

`--group` also trains the same seeds as one vmapped program (`train --seeds`,
engine/loop.train_runs) into OUT/group, and reports its images/s for all
seeds together against the separate runs' (`group_vs_separate` > 1: one
program beats running the seeds one after another).

Writes OUT/speedrun.md (the tables) and OUT/speedrun.json (the numbers).
`--force` is passed to every train: each measurement starts over (a
finished run in OUT would otherwise be resumed, i.e. not trained again).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from mnist_jax.core import run_dir
from mnist_jax.core.config import REPO_ROOT
from mnist_jax.core.errors import UserError
from mnist_jax.tools.timed_process import run_timed

TARGET_ACCURACY = 0.99
FINAL_LINE = "final test accuracy"  # what `train` prints last (cli/runs.py)


def train_command(config: str, workdir: str, overrides: Sequence[str],
                  seed: Optional[int] = None, seeds: str = "") -> List[str]:
  """The `train` command line a user would type for one seed (or a group)."""
  argv = [sys.executable, "-m", "mnist_jax", "train", "--config", config,
          "--workdir", workdir, "--force"]
  argv += [f"--config.seed={seed}"] if seed is not None else [f"--seeds={seeds}"]
  return argv + [f"--config.{o}" for o in overrides]


def time_train(argv: List[str]) -> Tuple[float, float]:
  """(seconds from the start of `argv` to its FINAL_LINE, CPU seconds)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
  timed = run_timed(argv, REPO_ROOT, env, marker=FINAL_LINE)
  return timed.marker_s, timed.cpu_s


def seed_result(workdir: str) -> Dict:
  """Accuracy of the run's reported epoch and its training time."""
  lines = run_dir.read_metrics(workdir)
  select = run_dir.read_config(workdir).select
  final = lines[run_dir.selected_index(lines, select)]
  images = sum(m["train_time_s"] * m["train_images_per_s"] for m in lines)
  return {"test_accuracy": final["test_accuracy"],
          "train_s": sum(m["train_time_s"] for m in lines),
          "train_images": round(images), "epochs": len(lines)}


def summary(rows: List[Dict]) -> Dict:
  """Mean accuracy, how many seeds miss the target, ranges of the times."""
  accs = [r["test_accuracy"] for r in rows]
  out = {"seeds": len(rows), "mean_accuracy": statistics.mean(accs),
         "below_target": sum(a < TARGET_ACCURACY for a in accs),
         "train_s_max": max(r["train_s"] for r in rows)}
  if all("end_to_end_s" in r for r in rows):
    out["end_to_end_s_max"] = max(r["end_to_end_s"] for r in rows)
  return out


def group_ratio(separate: List[Dict], group: List[Dict]) -> float:
  """Images/s of the group (all seeds together, one program) over that of
  the separate runs (each seed's images over its own training time, in turn)."""
  separate_ips = sum(r["train_images"] for r in separate) / sum(r["train_s"] for r in separate)
  # Every seed of a group reports the group's training time.
  group_ips = sum(r["train_images"] for r in group) / group[0]["train_s"]
  return group_ips / separate_ips


def markdown(rows: List[Dict], stats: Dict, command: str,
             group: Optional[Dict] = None) -> str:
  lines = [f"`{command}` (one process per seed)", "",
           "| seed | test accuracy | training (s) | end to end (s) | CPU (s) | load before |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r['seed']} | {100 * r['test_accuracy']:.2f}% | {r['train_s']:.1f} | "
            f"{r['end_to_end_s']:.1f} | {r['cpu_s']:.1f} | {r['load_1min']:.1f} |"
            for r in rows]
  seeds = f"{stats['seeds']} seed" + ("s" if stats["seeds"] != 1 else "")
  lines += ["", f"Mean test accuracy **{100 * stats['mean_accuracy']:.2f}%** over "
            f"{seeds}; {stats['below_target']} below "
            f"{100 * TARGET_ACCURACY:.1f}%."]
  if group:
    lines += ["", f"The same seeds as one vmapped program (`{group['command']}`): "
              f"training {group['train_s']:.1f} s, end to end {group['end_to_end_s']:.1f} s; "
              f"images/s {group['ratio']:.2f}x the separate runs'; accuracies "
              + ", ".join(f"{100 * a:.2f}%" for a in group["accuracies"]) + "."]
  return "\n".join(lines) + "\n"


def _shown(argv: List[str]) -> str:
  return "python " + " ".join(argv[1:])


def run(seeds: Sequence[int], out: str = "runs/speedrun",
        config: str = "configs/speedrun.py", overrides: Sequence[str] = (),
        group: bool = False) -> Dict:
  """Trains each seed as its own process (module docstring), prints the
  table, writes OUT/speedrun.md and OUT/speedrun.json; returns the numbers."""
  if not seeds or len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds {','.join(map(str, seeds))}: give one or more seeds, "
                    "each once.")
  config_path = config if os.path.isabs(config) else os.path.join(REPO_ROOT, config)
  if not os.path.isfile(config_path):
    raise UserError(f"--config_file {config}: no such file; give a path under configs/.")
  out = os.path.abspath(out)
  rows = []
  for seed in seeds:
    workdir = os.path.join(out, f"seed{seed}")
    argv = train_command(config_path, workdir, overrides, seed=seed)
    load = os.getloadavg()[0]
    end_to_end, cpu = time_train(argv)
    row = dict(seed=seed, end_to_end_s=end_to_end, cpu_s=cpu, load_1min=load,
               **seed_result(workdir))
    print(f"seed {seed}: test accuracy {row['test_accuracy']:.4f}, training "
          f"{row['train_s']:.1f} s, end to end {end_to_end:.1f} s (CPU {cpu:.1f} s, "
          f"load {load:.1f} before)", flush=True)
    rows.append(row)
  stats = summary(rows)
  shown = _shown(train_command(config, os.path.join(out, "seedS"), overrides, seed=0)
                 ).replace("--config.seed=0", "--config.seed=S")
  result = {"command": shown, "rows": rows, "summary": stats}
  if group:
    result["group"] = _run_group(seeds, out, config, config_path, overrides, rows)
  text = markdown(rows, stats, shown, result.get("group"))
  print(text, end="")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "speedrun.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "speedrun.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {os.path.join(out, 'speedrun.md')}")
  return result


def _run_group(seeds, out, config, config_path, overrides, separate) -> Dict:
  workdir = os.path.join(out, "group")
  listed = ",".join(map(str, seeds))
  end_to_end, cpu = time_train(train_command(config_path, workdir, overrides, seeds=listed))
  group = [seed_result(os.path.join(workdir, f"seed{s}")) for s in seeds]
  return {"command": _shown(train_command(config, workdir, overrides, seeds=listed)),
          "end_to_end_s": end_to_end, "cpu_s": cpu, "train_s": group[0]["train_s"],
          "accuracies": [g["test_accuracy"] for g in group],
          "ratio": group_ratio(separate, group)}
