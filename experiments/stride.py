r"""Study 4: stride ablation of the default CNN, with and without pooling.

  python experiments/stride.py --preset cpu     # this 2-core CPU
  python experiments/stride.py --preset full    # GPU/TPU recipe
  python experiments/stride.py --quick          # tiny, for tests

Strides 1, 2, 3 in all three conv stages, each with 2x2 max pooling after
every stage (as configs/cnn.py) and without pooling. Two combinations shrink
the map to nothing and are rejected by the CNN config check before any
training (stride 2 with pooling: 28 -> 14 -> 7 -> 4 -> 2 -> 1, then nothing to
pool; stride 3 with pooling likewise); they appear in the table as
'impossible', with the check's message as a note.

Presets. full: 5 seeds x 15 epochs. cpu: 3 seeds x 1 epoch on train[:30000]
(stride 1 without pooling keeps 28x28 maps in every stage, ~11x the default
CNN's multiply-adds, and dominates the time).
Estimate for cpu on the project's 2-core CPU (shared/noisy): EST.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ^ so that `python experiments/x.py` imports this checkout's mnist_jax.

from mnist_jax import reports, study_cli  # noqa: E402
from mnist_jax.study import Point, Preset, Study  # noqa: E402

STUDY = Study("stride", [
    Point(f"cnn_s{s}_{'pool' if pooled else 'nopool'}", "configs/cnn.py",
          {"model.strides": (s, s, s), "model.pooling": (("max" if pooled else "none"),) * 3},
          label=f"stride {s}, {'max pool' if pooled else 'no pooling'}")
    for s in (1, 2, 3) for pooled in (True, False)
])
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 15}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 1,
                                             "data.train_split": "train[:30000]"}),
}


def report(study, preset, study_dir, results):
  return reports.standard_report(study.name, study_dir, results,
                                 caption="CNN of configs/cnn.py with stride s in every stage;")


if __name__ == "__main__":
  study_cli.main(STUDY, PRESETS, report, description=__doc__)
