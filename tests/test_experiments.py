"""The study scripts end to end in --quick form on (a slice of) the real MNIST."""

import csv
import os

import pytest

from mnist_jax.core import run_dir
from mnist_jax.studies import script as study_cli
from mnist_jax.studies.spec import Study

from experiments import lecun1998, robustness as robustness_study

pytestmark = [pytest.mark.real_data, pytest.mark.slow]  # studies train CNNs


def quick(module, tmp_path, mnist_dir, study=None):
  """The study in its --quick form, as `python -m mnist_jax study NAME --quick` runs
  it (tests/test_cli.py runs that command itself), possibly on fewer points."""
  out = str(tmp_path / "study")
  study_cli.run(study or module.STUDY, module.PRESETS, module.report, quick=True,
                out=out, mnist_dir=mnist_dir,
                after_run_for=getattr(module, "after_run_for", None))
  return out


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_lecun_study_quick_writes_its_tables_and_figures(tmp_path, mnist_dir):
  # Two of the four rows (the cheap ones) keep the test fast; the machinery is
  # the same, and LeNet-5 itself is tested in test_model_variants.py.
  study = Study("lecun1998", [p for p in lecun1998.STUDY.points
                              if p.name in ("linear", "mlp300")])
  out = quick(lecun1998, tmp_path, mnist_dir, study)
  tables = os.path.join(out, "tables")
  for stem in ("lecun1998", "lecun1998_vs_paper"):
    for ext in ("md", "tex", "csv"):
      assert os.path.getsize(os.path.join(tables, f"{stem}.{ext}")) > 0
  rows = read_csv(os.path.join(tables, "lecun1998_vs_paper.csv"))
  assert [r["test error, LeCun et al. 1998 (%)"] for r in rows] == ["12.0", "4.7"]
  assert [int(r["seeds"]) for r in rows] == [2, 2]
  assert [int(r["parameters (ours)"]) for r in rows] == [7_850, 238_510]
  # Our error is computed from the runs' last-epoch test accuracy.
  run = os.path.join(out, "mlp300", "seed_1")
  assert run_dir.read_metrics(run)[-1]["test_count"] == 500
  errors = [100 * (1 - run_dir.read_metrics(os.path.join(out, "mlp300", f"seed_{s}"))[-1]
                   ["test_accuracy"]) for s in (0, 1)]
  assert float(rows[1]["test error, ours (%)_mean"]) == pytest.approx(sum(errors) / 2)
  for fig in ("lecun1998_accuracy_vs_params", "lecun1998_learning_curves"):
    assert os.path.getsize(os.path.join(out, "figures", f"{fig}.png")) > 0
    assert os.path.getsize(os.path.join(out, "figures", f"{fig}.pdf")) > 0


def test_robustness_quick_stores_curves_in_the_run_and_tabulates_them(tmp_path, mnist_dir):
  study = Study("robustness", robustness_study.STUDY.points[:1])  # the MLP
  out = quick(robustness_study, tmp_path, mnist_dir, study)
  shifts = list(robustness_study.PRESETS["cpu"].options["shifts"])
  stored = run_dir.read_extras(os.path.join(out, "mlp", "seed_0"))["robustness"]
  assert stored["shift_px"] == shifts and len(stored["shift_accuracy"]) == len(shifts)
  final = run_dir.read_metrics(os.path.join(out, "mlp", "seed_0"))[-1]
  assert stored["shift_accuracy"][0] == pytest.approx(final["test_accuracy"])
  rows = read_csv(os.path.join(out, "tables", "robustness_shift.csv"))
  assert rows[0]["model"] == "MLP 784-128-10" and rows[0]["seeds"] == "2"
  assert os.path.isfile(os.path.join(out, "figures", "robustness_curves.pdf"))
