"""The summary table and figures every study shares, built from its results.

Columns: model, parameters, multiply-adds per image, seeds, test accuracy and
test error (%, mean ± sample std over seeds, ddof=1) after the last epoch, and
training time (seconds in train steps, summed over epochs; compilation and
evaluation excluded). A point whose config is impossible is a row marked
'impossible', with the reason in a note.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

from mnist_jax.core import splits
from mnist_jax.studies import plots as study_plots
from mnist_jax.studies.results import PointResult
from mnist_jax.studies.stats import MeanStd
from mnist_jax.studies.tables import Column, Table

STATS_NOTE = ("mean ± sample standard deviation (ddof=1) over the seeds "
              "counted in 'seeds'; accuracy and error after the last epoch on "
              "the test split")


def percent(stat: MeanStd) -> MeanStd:
  return MeanStd(100 * stat.mean, 100 * stat.std, stat.n)


def error_percent(accuracy: MeanStd) -> MeanStd:
  return MeanStd(100 * (1 - accuracy.mean), 100 * accuracy.std, accuracy.n)


def devices(results: Sequence[PointResult]) -> str:
  found = sorted({r.extras.get("device", "?") for p in results for r in p.runs})
  return ", ".join(found) or "none yet"


SUMMARY_COLUMNS = [Column("model"), Column("status"), Column("parameters", ",d"),
                   Column("MACs/image", ",d"), Column("seeds", "d"),
                   Column("test accuracy (%)", ".2f"), Column("test error (%)", ".2f"),
                   Column("train time (s)", ".1f")]


def summary_row(p: PointResult, notes: List[str]) -> list:
  if p.rejected:
    notes.append(f"{p.point.title}: {p.rejected}")
    return [p.point.title, f"impossible (note {len(notes)})"] + [None] * 6
  if not p.runs:
    return [p.point.title, "not run yet"] + [None] * 6
  acc = p.final("test_accuracy")
  return [p.point.title, "trained", int(p.extra("num_params").mean),
          int(p.extra("macs_per_image").mean), acc.n, percent(acc),
          error_percent(acc), p.extra("train_time_s")]


def summary_table(results: Sequence[PointResult], caption: str = "") -> Table:
  notes: List[str] = []
  rows = [summary_row(p, notes) for p in results]
  text = f"{caption} {STATS_NOTE}; train time on {devices(results)}.".strip()
  return Table(SUMMARY_COLUMNS, rows, caption=text, notes=notes, budget=budget(results))


def _one_or_each(values) -> str:
  """The value all runs share, else each value the runs have, in order."""
  return " or ".join(sorted(set(values), key=lambda v: (len(v), v)))


def _images(config: Dict, split_key: str, what: str) -> str:
  split = config[f"data.{split_key}"]
  held_out = config.get("data.validation_size", 0) if split_key == "train_split" else 0
  count = splits.split_size(split) - held_out
  return f"{count:,} {what} images ({split}" + (
      f" less {held_out:,} for validation)" if held_out else ")")


def budget(results: Sequence[PointResult]) -> str:
  """What trained the tabulated runs, read from their config.json: epochs,
  training and test images, seeds, and the preset they were tabulated as,
  said to be theirs only when every run is that preset's config (not so for
  --quick runs tabulated as their full preset); empty when no run finished."""
  runs = [r for p in results for r in p.runs]
  if not runs:
    return ""
  epochs = _one_or_each(str(r.config["num_epochs"]) for r in runs)
  seeds = ", ".join(str(s) for s in sorted({r.seed for r in runs}))
  parts = [f"{epochs} epoch{'' if epochs == '1' else 's'}",
           _one_or_each(_images(r.config, "train_split", "training") for r in runs),
           _one_or_each(_images(r.config, "test_split", "test") for r in runs),
           f"seed{'s' if ',' in seeds else ''} {seeds}"]
  presets = {r.preset for r in runs}
  if len(presets) == 1 and "" not in presets:
    name = presets.pop()
    parts.append(f"preset {name}" if all(r.of_preset for r in runs)
                 else f"configs differing from preset {name}'s")
  return "Budget (the runs' config.json): " + "; ".join(parts) + "."


def standard_report(name: str, study_dir: str, results: Sequence[PointResult],
                    caption: str = "") -> List[str]:
  """The summary table and the accuracy-vs-parameters and learning-curve plots."""
  tables, figures = os.path.join(study_dir, "tables"), os.path.join(study_dir, "figures")
  paths = summary_table(results, caption).write(tables, name)
  paths += study_plots.accuracy_vs_params(results, os.path.join(figures, f"{name}_accuracy_vs_params"), name)
  paths += study_plots.learning_curves(results, os.path.join(figures, f"{name}_learning_curves"), name)
  return paths
