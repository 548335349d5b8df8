r"""Ours and the PyTorch twin, each timed in its own process:
`python -m mnist_jax benchmark --against torch --separate_processes N`.

  python -m mnist_jax benchmark --configs configs/speedrun.py --against torch \
      --separate_processes 3 --rounds 3 --steps 20

`--against torch` times both frameworks in one process, interleaved round by
round, so that load from elsewhere slows both alike; but then XLA's thread
pool and PyTorch's OpenMP threads live side by side, and one's threads may
still be spinning when the other's start. Here each framework runs in a fresh
`benchmark` process of its own, alternating (ours, PyTorch, ours, PyTorch,
...), N times each, with the same --configs, --set, --variants, --rounds and
--steps: ours as plain `benchmark`, PyTorch as `benchmark --against torch
--against_only` (our model is only built there, for its initial weights).
The table holds each framework's median over the N processes and
`ours_vs_torch` = ours / PyTorch's better format (> 1: ours faster).
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
from typing import Dict, List, Sequence

from mnist_jax.core.errors import UserError
from mnist_jax.tools.benchmark import print_table, write_csv
from mnist_jax.tools.timed_process import run_timed

TORCH_COLUMNS = ("torch_nchw_img_s", "torch_channels_last_img_s")


def _benchmark_rows(args: Sequence[str], out: str) -> List[Dict[str, str]]:
  """Rows of one `benchmark` process's CSV."""
  run_timed([sys.executable, "-m", "mnist_jax", "benchmark", *args, "--out", out],
            cwd=os.getcwd(), env=dict(os.environ))
  with open(out, newline="") as f:
    return list(csv.DictReader(f))


def run(configs: Sequence[str], variants: str, against: str, repeats: int,
        rounds: int, steps: int, out: str, sets: Sequence[str] = ()) -> List[Dict]:
  """Times ours and the twins in `repeats` alternating pairs of processes,
  prints the medians, writes `out` (CSV)."""
  if against != "torch" or repeats < 1:
    raise UserError("--separate_processes N (N >= 1) compares against another "
                    "framework's process: give --against torch.")
  common = ["--configs", ",".join(configs), "--rounds", str(rounds),
            "--steps", str(steps)] + (["--variants", variants] if variants else [])
  common += [arg for text in sets for arg in ("--set", text)]
  ours: Dict[str, List[float]] = {}
  theirs: Dict[str, Dict[str, List[float]]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(repeats):
      for row in _benchmark_rows(common, os.path.join(tmp, f"ours{i}.csv")):
        ours.setdefault(row["case"], []).append(float(row["train_img_s"]))
      for row in _benchmark_rows(common + ["--against", "torch", "--against_only"],
                                 os.path.join(tmp, f"torch{i}.csv")):
        for column in TORCH_COLUMNS:
          theirs.setdefault(row["case"], {}).setdefault(column, []).append(
              float(row[column]))
      print(f"pair {i + 1} of {repeats} done", flush=True)
  rows = [_median_row(case, ours[case], theirs[case], repeats) for case in ours]
  print_table(rows)
  write_csv(out, rows)
  print(f"wrote {out}")
  return rows


def _median_row(case: str, ours: List[float], theirs: Dict[str, List[float]],
                repeats: int) -> Dict:
  row = {"case": case, "processes_each": repeats,
         "train_img_s": round(statistics.median(ours)),
         "train_img_s_runs": " ".join(str(round(v)) for v in ours)}
  for column in TORCH_COLUMNS:
    row[column] = round(statistics.median(theirs[column]))
    row[f"{column}_runs"] = " ".join(str(round(v)) for v in theirs[column])
  row["ours_vs_torch"] = round(row["train_img_s"] / max(row[c] for c in TORCH_COLUMNS), 3)
  return row
