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

Presets. full: 5 seeds x 15 epochs, all 60,000 training images. cpu: 3 seeds
x 1 epoch on train[:20000] (stride 1 without pooling keeps 28x28 maps in
every stage, ~11x the default CNN's multiply-adds, and dominates the time).
Measured for cpu: 15 min 58 s wall for the whole study on the project's 2-core CPU
(2026-11-29, partly shared with other jobs).
Estimate for cpu from train steps timed on the project's 2-core CPU while
other jobs ran (load average ~8; idle is about twice as fast, e.g. the
default CNN 40-55 s/epoch idle against 106 s here), batch 128:
stride 1 pooled 226 ms/step, stride 1 no pooling 5,180 ms, stride 2 no
pooling 91 ms, stride 3 no pooling 59 ms; a test-set evaluation 11, 68, 6,
7 s. cpu = 3 x 156 steps: stride 1 no pooling ~40 min + evaluation 3.4 min,
the rest ~3 min: ~47 min loaded, ~24 min idle.
"""

import sys

from mnist_jax.studies import reports
from mnist_jax.studies.spec import NO_AUGMENTATION, Point, Preset, Study

STUDY = Study("stride", [
    Point(f"cnn_s{s}_{'pool' if pooled else 'nopool'}", "configs/cnn.py",
          {"model.strides": (s, s, s), "model.pooling": (("max" if pooled else "none"),) * 3,
           **NO_AUGMENTATION},
          label=f"stride {s}, {'max pool' if pooled else 'no pooling'}")
    for s in (1, 2, 3) for pooled in (True, False)
], title="4. Stride ablation, with and without pooling")
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 15}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 1,
                                             "data.train_split": "train[:30000]"}),
}


def report(study, preset, study_dir, results):
  return reports.standard_report(study.name, study_dir, results,
                                 caption="CNN of configs/cnn.py with stride s in every stage;")


if __name__ == "__main__":  # the same as `python -m mnist_jax study NAME ...`
  from mnist_jax import cli
  cli.run(["study", STUDY.name, *sys.argv[1:]])
