"""Statistics over seeds: the mean and the sample standard deviation (ddof=1,
the n-1 estimator); with one seed the std is undefined (NaN). No JAX."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class MeanStd:
  mean: float
  std: float  # sample std (ddof=1); NaN when n < 2
  n: int


def mean_std(values: Sequence[float]) -> MeanStd:
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return MeanStd(math.nan, math.nan, 0)
  std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
  return MeanStd(float(np.mean(values)), std, int(values.size))
