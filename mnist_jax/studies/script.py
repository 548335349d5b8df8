"""The command line shared by the experiments/ scripts.

  python experiments/<study>.py --preset cpu|full [--quick] [--out DIR]
                                [--data_dir DIR] [--tables_only]
                                [--executor inline|ray [--address ADDR]
                                 [--gpus_per_run F] [--cpus_per_run N]]

Trains what is not finished yet, then builds the tables (Markdown, LaTeX, CSV)
under <out>/tables and the figures (PNG, PDF) under <out>/figures from the
run directories. The default <out> is runs/studies/<study>/<preset>[-quick].
Runs that failed (a UserError) are named after the tables, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

# Quiet TensorFlow's C++ start-up chatter (it is only used by tfds to read data).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from mnist_jax.studies import executor as executor_lib  # noqa: E402
from mnist_jax.studies import results as aggregate, runner as study_lib, spec  # noqa: E402
from mnist_jax.core.errors import UserError  # noqa: E402

# report(study, preset, study_dir, results) -> paths of the tables and figures written
Report = Callable[[spec.Study, spec.Preset, str,
                   List[aggregate.PointResult]], List[str]]
AfterRunFor = Callable[[spec.Preset], study_lib.AfterRun]


def parse(argv: Sequence[str], presets: Dict[str, spec.Preset],
          description: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(presets), default="cpu",
                      help="training budget (see the script's docstring)")
  parser.add_argument("--quick", action="store_true",
                      help="tiny form for tests: 2 seeds, 1 epoch, 1000/500 images")
  parser.add_argument("--out", default=None, help="study folder (default: "
                      "runs/studies/<study>/<preset>[-quick])")
  parser.add_argument("--data_dir", default=None,
                      help="folder with the MNIST .gz files (default: $MNIST_DIR)")
  parser.add_argument("--vmap_seeds", action="store_true",
                      help="train each point's seeds together in one vmapped "
                      "program (see docs/performance.md for when it is faster)")
  parser.add_argument("--tables_only", action="store_true",
                      help="rebuild tables and figures from the runs, train nothing")
  executor_lib.add_arguments(parser)
  return parser.parse_args(argv)


def run(study: spec.Study, presets: Dict[str, spec.Preset], report: Report,
        argv: Sequence[str], after_run_for: Optional[AfterRunFor] = None,
        description: str = "") -> List[str]:
  """Trains and reports one study; returns the files written."""
  args = parse(argv, presets, description or study.name)
  preset = presets[args.preset]
  if args.quick:
    preset = spec.quick(preset)
  out = args.out or os.path.join("runs", "studies", study.name,
                                 args.preset + ("-quick" if args.quick else ""))
  runs = []
  if not args.tables_only:
    after_run = after_run_for(preset) if after_run_for else None
    runs = study_lib.run_study(study, preset, out, mnist_dir=args.data_dir,
                               after_run=after_run, vmap_seeds=args.vmap_seeds,
                               **executor_lib.placement_from(args))
  results = aggregate.collect(study, preset, out)
  paths = report(study, preset, out, results)
  for path in paths:
    if path.endswith(".md"):
      print(f"\n{path}\n" + open(path).read())
  print("wrote " + ", ".join(paths))
  executor_lib.raise_failures(runs)
  return paths


def main(study, presets, report, after_run_for=None, description="") -> None:
  """`run` for a script's __main__: bad input ends in `error: ...`, exit 2."""
  try:
    run(study, presets, report, sys.argv[1:], after_run_for, description)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
