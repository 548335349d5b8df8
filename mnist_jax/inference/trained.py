"""A trained run, restored for looking inside and predicting: `load(workdir)`.

Holds the model and the parameters and batch norm statistics (if any)
evaluation uses (engine/state.eval_variables: the moving averages of both
when the run kept them; the optimiser state is dropped), and gives probabilities for uint8 images and the feature maps
of each conv stage. A run that selects by validation accuracy loads its best
epoch's checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional

import flax.linen as nn
import ml_collections
import numpy as np

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import CONV_MODULES, activation
from mnist_jax.engine import evaluate as eval_lib, restore as restore_lib
from mnist_jax.engine.mesh import to_host
from mnist_jax.engine.state import eval_variables, variables


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  config: ml_collections.ConfigDict
  model: nn.Module
  params: Dict
  batch_stats: Dict = dataclasses.field(default_factory=dict)  # {}: no batch norm

  @property
  def conv_stages(self) -> List[str]:
    """Names of the conv layers in order ('conv0', ...); [] for a dense model."""
    names = [k for k in self.params if re.fullmatch(r"conv\d+", k)]
    return sorted(names, key=lambda k: int(k[len("conv"):]))

  def first_kernels(self) -> np.ndarray:
    """The first conv layer's kernels, KxKxCinxF."""
    return np.asarray(self.params[self.conv_stages[0]]["kernel"])

  def probabilities(self, images_NxHxWx1: np.ndarray,
                    batch_size: Optional[int] = None) -> np.ndarray:
    """Softmax outputs NxC for uint8 images, in batches of one compiled shape
    (the engine's evaluator: compiled once per model)."""
    return eval_lib.probabilities(self.model.apply, self.params, self.batch_stats,
                                  images_NxHxWx1,
                                  batch_size or int(self.config.eval_batch_size))

  def feature_maps(self, image_HxWx1: np.ndarray) -> List[np.ndarray]:
    """Each conv stage's output after its activation (before pooling), HxWxF.

    Captured with flax's capture_intermediates, so the model is unchanged; the
    activation is applied here because in the model it is a function, not a
    submodule whose output could be captured.
    """
    x = data_lib.scale_pixels(image_HxWx1[None])
    _, state = self.model.apply(
        variables(self.params, self.batch_stats), x, train=False,
        capture_intermediates=lambda mdl, _: isinstance(mdl, CONV_MODULES))
    acts = [stage.activation for stage in self.model.stages()]
    return [np.asarray(activation(acts[i])(state["intermediates"][name]["__call__"][0])[0])
            for i, name in enumerate(self.conv_stages)]


def load(workdir: str) -> TrainedModel:
  """The run's config, model and selected checkpoint's evaluation parameters."""
  config = run_dir.read_config(workdir)
  restore_lib.refuse_diverged(workdir)
  state = restore_lib.restore_state(workdir, config,
                                    which=restore_lib.selected_checkpoint(config))
  params, batch_stats = to_host(eval_variables(state))
  return TrainedModel(config, build_model(config.model), params, batch_stats)
