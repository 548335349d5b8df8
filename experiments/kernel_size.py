r"""Study 3: kernel-size ablation of the default CNN: 1x1, 3x3, 5x5, 7x7.

  python experiments/kernel_size.py --preset cpu     # this 2-core CPU
  python experiments/kernel_size.py --preset full    # GPU/TPU recipe
  python experiments/kernel_size.py --quick          # tiny, for tests

Same depth, widths, strides and pooling as configs/cnn.py; only the kernel
size of all three conv stages changes. A 1x1 kernel sees one pixel, so the
network can only combine pixels in its dense head.

Presets. full: 5 seeds x 15 epochs, all 60,000 training images. cpu: 3 seeds
x 2 epochs, all 60,000 training images.
Measured for cpu: 34 min 12 s wall for the whole study on the project's 2-core CPU
(2026-11-29, partly shared with other jobs).
Estimate for cpu from train steps timed on the project's 2-core CPU while
other jobs ran (load average ~8; idle is about twice as fast, e.g. the
default CNN 40-55 s/epoch idle against 106 s here), batch 128:
1x1 218 ms/step, 3x3 226 ms, 5x5 990 ms, 7x7 2,250 ms; a test-set evaluation
7, 11, 27, 39 s (these loaded step times overstate the measured total above).
"""

import sys

from mnist_jax.studies import reports
from mnist_jax.studies.spec import NO_AUGMENTATION, Point, Preset, Study

STUDY = Study("kernel_size", [
    Point(f"cnn_k{k}", "configs/cnn.py", {"model.kernel_sizes": (k, k, k), **NO_AUGMENTATION},
          label=f"CNN {k}x{k}")
    for k in (1, 3, 5, 7)
], title="3. Kernel-size ablation")
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 15}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 2}),
}


def report(study, preset, study_dir, results):
  return reports.standard_report(study.name, study_dir, results,
                                 caption="CNN of configs/cnn.py with k x k kernels in every stage;")


if __name__ == "__main__":  # the same as `python -m mnist_jax study NAME ...`
  from mnist_jax import cli
  cli.run(["study", STUDY.name, *sys.argv[1:]])
