r"""Study 1: MLP vs CNN, and what weight sharing buys.

  python experiments/mlp_vs_cnn.py --preset cpu     # this 2-core CPU
  python experiments/mlp_vs_cnn.py --preset full    # GPU/TPU recipe
  python experiments/mlp_vs_cnn.py --quick          # tiny, for tests

Points: the article's MLP (784-128-10), the default CNN, the same CNN with its
convolutions replaced by locally connected layers (nn.ConvLocal: same
receptive fields and output shapes, a separate kernel at every position), and
an MLP widened (304 hidden units, 241,690 parameters) to the CNN's 241,546.
Tables: the summary (parameters, MACs/image, accuracy, error, train time) and,
per conv layer of the CNN, its parameters against the locally connected and
the fully connected layer with the same input and output shapes.

Presets. full: 5 seeds x 15 epochs, all 60,000 training images. cpu: 3 seeds
x 2 epochs on train[:20000] (every point), because the locally connected CNN
is slow on CPU: nn.ConvLocal extracts patches (conv_general_dilated_patches)
and measured ~10x the time of the shared-weight CNN per step.
Measured for cpu: 18 min 15 s wall for the whole study on the project's 2-core CPU
(2026-11-29, partly shared with other jobs).
Estimate for cpu from train steps timed on the project's 2-core CPU while
other jobs ran (load average ~8; idle is about twice as fast, e.g. the
default CNN 40-55 s/epoch idle against 106 s here), batch 128:
MLP 1.1 ms/step, wide MLP 2.1 ms, CNN 226 ms, locally connected CNN 2,370 ms;
test evaluation (10,000 images) MLP ~1 s, CNN 11 s, local CNN 29 s.
cpu = 3 x 2 x 156 steps: local ~37 min + CNN ~4 min + evaluation ~4 min:
~45 min loaded, ~25 min idle.
"""

import os
import sys

from mnist_jax.studies import reports
from mnist_jax.core.models.cost import sharing_rows
from mnist_jax.core.config import load_config_file
from mnist_jax.studies.spec import NO_AUGMENTATION, Point, Preset, Study
from mnist_jax.studies.tables import Column, Table

STUDY = Study("mlp_vs_cnn", [
    Point("mlp", "configs/mlp.py", label="MLP 784-128-10"),
    Point("cnn", "configs/cnn.py", NO_AUGMENTATION, label="CNN (conv)"),
    Point("cnn_local", "configs/cnn.py", {"model.conv_type": "local", **NO_AUGMENTATION},
          label="CNN, locally connected"),
    Point("mlp_wide", "configs/mlp.py", {"model.hidden_features": (304,)},
          label="MLP 784-304-10 (CNN-sized)"),
], title="1. MLP vs CNN, and what weight sharing buys")
PRESETS = {
    "full": Preset(seeds=range(5), overrides={"num_epochs": 15}),
    "cpu": Preset(seeds=range(3), overrides={"num_epochs": 2,
                                             "data.train_split": "train[:20000]"}),
}


def sharing_table() -> Table:
  """Per conv layer of the default CNN: conv vs locally vs fully connected."""
  cfg = load_config_file("configs/cnn.py").model
  rows = []
  for r in sharing_rows(cfg):
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    rows.append([r["layer"], shape(r["input"]), shape(r["output"]),
                 f"{r['kernel']}x{r['kernel']}/{r['stride']}", r["conv"], r["local"],
                 r["dense"], r["local"] / r["conv"], r["dense"] / r["conv"]])
  columns = [Column("layer"), Column("input"), Column("output"),
             Column("kernel/stride"), Column("conv params", ",d"),
             Column("locally connected params", ",d"),
             Column("fully connected params", ",d"), Column("local/conv", ",.0f"),
             Column("dense/conv", ",.0f")]
  caption = ("Parameters (weights and biases) of each conv layer of configs/cnn.py "
             "against a locally connected layer (same receptive fields, a bias "
             "per output position, as nn.ConvLocal) and a fully connected layer "
             "with the same input and output shapes; computed analytically.")
  return Table(columns, rows, caption=caption)


def report(study, preset, study_dir, results):
  paths = reports.standard_report(study.name, study_dir, results)
  paths += sharing_table().write(os.path.join(study_dir, "tables"),
                                 f"{study.name}_per_layer")
  return paths


if __name__ == "__main__":  # the same as `python -m mnist_jax study NAME ...`
  from mnist_jax import cli
  cli.run(["study", STUDY.name, *sys.argv[1:]])
