"""A study's declaration: named points (config overrides on a config file) x seeds.

Pure data and config arithmetic, no JAX: tables and reports read a study's
spec without importing the training stack (import-linter contract).
Each run trains in its own directory `<study_dir>/<point>/seed_<k>`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import ml_collections

from mnist_jax.core.config import apply_overrides, base_config, load_config_file
from mnist_jax.core.errors import UserError


# configs/cnn.py trains on augmented images; a study that compares models or
# architectures gives every point the same plain images, and keeps its runs'
# config (config.json) as it was, by adding these overrides to its CNN points.
NO_AUGMENTATION = {f"augment.{key}": value for key, value in base_config().augment.items()}


@dataclasses.dataclass(frozen=True)
class Point:
  """One configuration of a study: `overrides` ('model.kernel_sizes': (5, 5, 5))
  applied to the config file `config_file` (relative to the repository root)."""

  name: str  # directory name, e.g. "cnn_k5"
  config_file: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  label: str = ""  # row label in tables; `name` if empty

  @property
  def title(self) -> str:
    return self.label or self.name


@dataclasses.dataclass(frozen=True)
class Preset:
  """Seeds and training budget: `overrides` apply to every point (before the
  point's own), `per_point` to the named points only; `options` are settings
  of the study itself (e.g. the shifts of the robustness study)."""

  seeds: Sequence[int]
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  per_point: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # What the study was run with, for the tables' budget line ('cpu', 'cpu --quick');
  # set by studies/script.run, not declared.
  name: str = ""


QUICK_OVERRIDES = {"num_epochs": 1, "data.train_split": "train[:1000]",
                   "data.test_split": "test[:500]"}


def quick(preset: Preset) -> Preset:
  """The tiny form of a preset, for tests: 2 seeds, 1 epoch, 1000/500 images."""
  per_point = {name: {k: v for k, v in o.items() if k != "num_epochs"}
               for name, o in preset.per_point.items()}
  return dataclasses.replace(preset, seeds=(0, 1), per_point=per_point,
                             overrides=dict(preset.overrides, **QUICK_OVERRIDES))


@dataclasses.dataclass(frozen=True)
class Study:
  """`name` is its file's, experiments/<name>.py; `title` heads its section of
  RESULTS.md, whose sections follow the titles' leading numbers ("3. ...")."""

  name: str
  points: Sequence[Point]
  title: str = ""


def part(study: Study, preset: Preset, points: Optional[Sequence[str]] = None,
         seeds: Optional[Sequence[int]] = None) -> Tuple[Study, Preset]:
  """The study cut to the named `points` and the preset to `seeds` (all of
  each when None): a part of a study trains, and is tabulated, on its own."""
  if points is not None:
    known = {p.name: p for p in study.points}
    unknown = [name for name in points if name not in known]
    if not points:
      raise UserError(f"--points is empty: name some of {', '.join(known)}, or leave "
                      "--points out for the whole study.")
    if unknown:
      raise UserError(f"--points: study {study.name} has no point {unknown[0]!r}: use "
                      f"some of {', '.join(known)}.")
    study = dataclasses.replace(study, points=[known[name] for name in points])
  if seeds is not None:
    preset = dataclasses.replace(preset, seeds=tuple(seeds))
  return study, preset


@dataclasses.dataclass(frozen=True)
class Run:
  point: Point
  seed: int
  workdir: str
  config: ml_collections.ConfigDict


def point_config(point: Point, preset: Preset, seed: int) -> ml_collections.ConfigDict:
  config = load_config_file(point.config_file)
  apply_overrides(config, preset.overrides)
  apply_overrides(config, preset.per_point.get(point.name, {}))
  apply_overrides(config, point.overrides)
  config.seed = seed
  return config


def point_dir(study_dir: str, point: Point) -> str:
  return os.path.join(study_dir, point.name)


def run_workdir(study_dir: str, point: Point, seed: int) -> str:
  return os.path.join(point_dir(study_dir, point), f"seed_{seed}")
