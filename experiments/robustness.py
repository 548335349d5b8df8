r"""Study 2: translation (and rotation) robustness of the trained MLP and CNN.

  python experiments/robustness.py --preset cpu     # this 2-core CPU
  python experiments/robustness.py --preset full    # GPU/TPU recipe
  python experiments/robustness.py --quick          # tiny, for tests

Trains the article's MLP and the default CNN, then evaluates each run on the
test set shifted by 0..k pixels (mean over right, left, down and up) and
rotated by a few angles (mnist_jax/inference/robustness.py). Measures the article's
claim that a convolutional layer finds a feature "without being affected by
the position". Tables: accuracy per shift and per angle; a two-panel plot.
Note the CNN is only partly shift-invariant by construction: convolutions are
shift-equivariant, max pooling and the dense head are not.

Presets. full: 5 seeds x 15 epochs, shifts 0..8 px, angles -45..45 by 15.
cpu: 3 seeds x 3 epochs, shifts 0..6 px, angles -30..30 by 15.
Measured for cpu: 16 min 2 s wall for the whole study on the project's 2-core CPU
(2026-11-29, partly shared with other jobs).
Estimate for cpu from train steps timed on the project's 2-core CPU while
other jobs ran (load average ~8; idle is about twice as fast, e.g. the
default CNN 40-55 s/epoch idle against 106 s here), batch 128:
MLP 1.1 ms/step, CNN 226 ms/step (106 s/epoch); a test-set evaluation MLP
~1 s, CNN ~11 s, and each run has 3 + 29 of them. cpu: CNN training
3 x 3 x 106 s = 16 min, CNN evaluation 3 x 32 x 11 s = 18 min, MLP ~2 min:
~35 min loaded, ~18 min idle.
"""

import os
import sys

from mnist_jax.studies import reports, plots as study_plots
from mnist_jax.inference import robustness
from mnist_jax.studies.stats import mean_std
from mnist_jax.studies.spec import NO_AUGMENTATION, Point, Preset, Study
from mnist_jax.studies.tables import Column, Table

STUDY = Study("robustness", [
    Point("mlp", "configs/mlp.py", label="MLP 784-128-10"),
    Point("cnn", "configs/cnn.py", NO_AUGMENTATION, label="CNN (conv)"),
], title="2. Translation and rotation robustness")
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 15},
                   options={"shifts": tuple(range(9)),
                            "angles": (-45, -30, -15, 0, 15, 30, 45)}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 3},
                  options={"shifts": tuple(range(7)), "angles": (-30, -15, 0, 15, 30)}),
}


def after_run_for(preset):
  def evaluate(run, load_data):
    robustness.evaluate_run(run, load_data, preset.options["shifts"],
                            preset.options["angles"])
  return evaluate


def curve(point_result, axis: str):
  """(xs, [MeanStd per x]) over the seeds' stored robustness results."""
  found = [r.extras[robustness.EXTRAS_KEY] for r in point_result.runs
           if robustness.EXTRAS_KEY in r.extras]
  if not found:
    return [], []
  xs = found[0][f"{axis}_{'px' if axis == 'shift' else 'deg'}"]
  stats = [mean_std([f[f"{axis}_accuracy"][i] for f in found]) for i in range(len(xs))]
  return xs, stats


def robustness_table(results, axis: str, unit: str) -> Table:
  xs = next((curve(p, axis)[0] for p in results if curve(p, axis)[0]), [])
  columns = [Column("model"), Column("seeds", "d")]
  columns += [Column(f"{x:g} {unit}", ".2f") for x in xs]
  rows = []
  for p in results:
    _, stats = curve(p, axis)
    cells = [reports.percent(s) for s in stats] or [None] * len(xs)
    rows.append([p.point.title, stats[0].n if stats else 0] + cells)
  what = ("shifted by k pixels (mean over right, left, down, up; zero fill)"
          if axis == "shift" else "rotated about the centre (bilinear, zero fill)")
  caption = f"Test accuracy (%) on the test set {what}; {reports.STATS_NOTE}."
  return Table(columns, rows, caption=caption, budget=reports.budget(results))


def report(study, preset, study_dir, results):
  tables, figures = os.path.join(study_dir, "tables"), os.path.join(study_dir, "figures")
  paths = reports.summary_table(results).write(tables, study.name)
  paths += robustness_table(results, "shift", "px").write(tables, "robustness_shift")
  paths += robustness_table(results, "rotation", "deg").write(tables, "robustness_rotation")
  panels = {axis: {p.point.title: curve(p, axis) for p in results if p.runs}
            for axis in ("shift", "rotation")}
  paths += study_plots.curves(panels, {"shift": "shift (pixels)", "rotation": "rotation (degrees)"},
                        os.path.join(figures, "robustness_curves"))
  return paths


if __name__ == "__main__":  # the same as `python -m mnist_jax study NAME ...`
  from mnist_jax import cli
  cli.run(["study", STUDY.name, *sys.argv[1:]])
