r"""Study 5: LeCun et al. 1998 ("Gradient-based learning applied to document
recognition", Proc. IEEE), four rows of its MNIST table trained here.

  python experiments/lecun1998.py --preset cpu     # this 2-core CPU
  python experiments/lecun1998.py --preset full    # GPU/TPU recipe
  python experiments/lecun1998.py --quick          # tiny, for tests

Rows and published test errors (no distortions): linear classifier 12.0%,
2-layer net with 300 hidden units 4.7%, 3-layer net 300-100 3.05%, LeNet-5
0.95%. Ours use ReLU, softmax cross-entropy and Adam (the paper: sigmoid /
scaled tanh units, squared error or RBF outputs, stochastic diagonal
Levenberg-Marquardt); LeNet-5's deviations are listed in
mnist_jax/core/models/lenet5.py. The paper's LeNet-5 has about 60,000 parameters
(its C3 connects 60 of 96 map pairs); ours 61,706.

Presets. full: 5 seeds x 20 epochs (the paper trained LeNet-5 for 20).
cpu: 3 seeds x 10 epochs, all 60,000 training images.
Measured for cpu: 8 min 44 s wall for the whole study on the project's 2-core CPU
(2026-11-29, partly shared with other jobs).
Estimate for cpu from train steps timed on the project's 2-core CPU while
other jobs ran (load average ~8; idle is about twice as fast, e.g. the
default CNN 40-55 s/epoch idle against 106 s here), batch 128:
linear 0.6 ms/step, 300 hidden ~2.1 ms (timed with 304), 300-100 2.6 ms, LeNet-5 26 ms
(12 s/epoch); a test-set evaluation 1-2 s. cpu: LeNet-5 3 x 10 x 14 s = 7 min,
the MLPs ~4 min with their evaluations: ~11 min loaded, ~6 min idle.
"""

import os
import sys

from mnist_jax.studies import reports
from mnist_jax.studies.spec import Point, Preset, Study
from mnist_jax.studies.tables import Column, Table

STUDY = Study("lecun1998", [
    Point("linear", "configs/mlp.py", {"model.hidden_features": ()},
          label="linear classifier (1-layer NN)"),
    Point("mlp300", "configs/mlp.py", {"model.hidden_features": (300,)},
          label="2-layer NN, 300 hidden units"),
    Point("mlp300_100", "configs/mlp.py", {"model.hidden_features": (300, 100)},
          label="3-layer NN, 300+100 hidden units"),
    Point("lenet5", "configs/lenet5.py", label="LeNet-5"),
], title="5. LeCun et al. 1998, reproduced")
PUBLISHED_ERROR = {"linear": 12.0, "mlp300": 4.7, "mlp300_100": 3.05, "lenet5": 0.95}
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 20}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 10}),
}


def lecun_table(results) -> Table:
  columns = [Column("model"), Column("parameters (ours)", ",d"), Column("seeds", "d"),
             Column("test error, ours (%)", ".2f"),
             Column("test error, LeCun et al. 1998 (%)", ".2f")]
  rows = []
  for p in results:
    if p.runs:
      acc = p.final("test_accuracy")
      ours = [int(p.extra("num_params").mean), acc.n, reports.error_percent(acc)]
    else:
      ours = [None, 0, None]
    rows.append([p.point.title] + ours + [PUBLISHED_ERROR[p.point.name]])
  caption = ("Published errors: LeCun, Bottou, Bengio and Haffner 1998, "
             "Proc. IEEE 86(11), MNIST comparison, no distortions. Ours: "
             + reports.STATS_NOTE + ".")
  return Table(columns, rows, caption=caption, budget=reports.budget(results))


def report(study, preset, study_dir, results):
  paths = reports.standard_report(study.name, study_dir, results)
  paths += lecun_table(results).write(os.path.join(study_dir, "tables"),
                                      f"{study.name}_vs_paper")
  return paths


if __name__ == "__main__":  # the same as `python -m mnist_jax study NAME ...`
  from mnist_jax import cli
  cli.run(["study", STUDY.name, *sys.argv[1:]])
