"""experiments/make_results.py: RESULTS.md sections from run folders and findings files."""

import os
import pathlib

import pytest

from experiments import make_results

REPO = pathlib.Path(make_results.REPO)


@pytest.fixture
def findings(tmp_path, monkeypatch):
  """An empty findings folder that make_results reads instead of the real one."""
  folder = tmp_path / "findings"
  folder.mkdir()
  monkeypatch.setattr(make_results, "FINDINGS_DIR", str(folder))
  return folder


def fake_study(root, tables):
  """A study folder with one finished run, the given tables and one figure."""
  study_dir = root / "kernel_size" / "cpu"
  (study_dir / "cnn_k3" / "seed_0").mkdir(parents=True)
  (study_dir / "cnn_k3" / "seed_0" / "metrics.jsonl").write_text('{"epoch": 1}\n')
  (study_dir / "tables").mkdir()
  for name, text in tables.items():
    (study_dir / "tables" / f"{name}.md").write_text(text)
  (study_dir / "figures").mkdir()
  (study_dir / "figures" / "kernel_size_curves.png").write_bytes(b"\x89PNG fake")
  return study_dir


def test_study_section_puts_each_tables_finding_after_it(tmp_path, findings, capsys):
  (findings / "kernel_size.md").write_text(
      "A 1x1 kernel sees one pixel,\nso it stays at 70.91%.\n\nSecond paragraph\n  here.\n")
  study_dir = fake_study(tmp_path, {"kernel_size": "| k | acc |\n| --- | --- |\n| 1 | 70.91 |\n",
                                    "kernel_size_extra": "| extra |\n| --- |\n"})
  figures_out = tmp_path / "docs_figures"
  figures_out.mkdir()
  text = make_results.study_section("kernel_size", "cpu", str(study_dir), str(figures_out))
  blocks = text.split("\n\n")
  assert blocks[0] == "## 3. Kernel-size ablation"
  assert blocks[1].startswith("Command: `python experiments/kernel_size.py --preset cpu`;")
  at = blocks.index("| k | acc |\n| --- | --- |\n| 1 | 70.91 |")
  # The wrapped file comes back one line per paragraph, right after its table.
  assert blocks[at + 1:at + 3] == ["A 1x1 kernel sees one pixel, so it stays at 70.91%.",
                                   "Second paragraph here."]
  assert blocks[at + 3] == "| extra |\n| --- |"
  assert blocks[at + 4] == ("No findings written for this table yet "
                            f"({os.path.relpath(findings / 'kernel_size_extra.md', REPO)} "
                            "is missing).")
  assert "kernel_size_extra.md" in capsys.readouterr().err
  assert (figures_out / "kernel_size_curves.png").read_bytes() == b"\x89PNG fake"
  assert "![kernel_size_curves.png](" in text


def test_study_section_of_a_study_never_run_says_so(tmp_path, findings):
  text = make_results.study_section("stride", "cpu", str(tmp_path / "absent"),
                                    str(tmp_path))
  assert "runs finished not run." in text and text.endswith("Not run yet.\n")


def fake_frontier(root, recipes):
  for recipe in recipes:
    (root / recipe / "tables").mkdir(parents=True)
    (root / recipe / "tables" / "frontier.md").write_text(f"| {recipe} table |\n")
  return root


def test_frontier_section_reads_the_recipe_and_its_history(tmp_path, findings):
  for name in ("frontier_cpu", "frontier_cpu_v2", "frontier_cpu_affine",
               "frontier_cpu_elastic"):
    (findings / f"{name}.md").write_text(f"{name} prose,\nwrapped.\n")
  frontier = fake_frontier(tmp_path / "frontier", ("cpu", "cpu_v2", "cpu_affine"))
  blocks = make_results.frontier_section(str(frontier)).split("\n\n")
  cpu = blocks.index("| cpu table |")
  assert blocks[cpu + 1:cpu + 8] == [
      "frontier_cpu prose, wrapped.", "#### Earlier versions of the `cpu` recipe",
      "frontier_cpu_v2 prose, wrapped.", "| cpu_v2 table |",
      "frontier_cpu_affine prose, wrapped.", "| cpu_affine table |",
      "frontier_cpu_elastic prose, wrapped."]
  assert blocks[-2:] == ["Command: `python experiments/frontier.py --recipe full`.",
                         "Not run yet: it needs a GPU or TPU.\n"]


def test_every_findings_file_reads_as_in_results_md():
  """RESULTS.md rebuilt from the same runs reads the same: its prose is these files'."""
  results = (REPO / "RESULTS.md").read_text()
  names = sorted(p.stem for p in (REPO / "experiments" / "findings").glob("*.md"))
  assert len(names) == 13
  for name in names:
    assert f"\n\n{make_results.read_finding(name)}\n\n" in results, name
