"""One table, three formats: Markdown, LaTeX (booktabs) and CSV.

A cell is a str, an int, a float, a MeanStd (printed `mean ± std`, and as two
CSV columns `<name>_mean`, `<name>_std`) or None (printed as an em dash).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Any, List, Sequence

from mnist_jax.studies.stats import MeanStd

DASH = "—"


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  fmt: str = ""  # format spec for numbers, e.g. ",d" or ".2f"


def _number(value: float, fmt: str) -> str:
  return "n/a" if math.isnan(value) else format(value, fmt)


def format_cell(value: Any, fmt: str, pm: str = " ± ") -> str:
  if value is None:
    return DASH
  if isinstance(value, MeanStd):
    if value.n == 0:
      return DASH
    return f"{_number(value.mean, fmt)}{pm}{_number(value.std, fmt)}"
  if isinstance(value, (int, float)):
    return _number(value, fmt)
  return str(value)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\~{}",
                  "^": r"\^{}", "±": r"$\pm$", "—": "---", "×": r"$\times$"}


def latex_escape(text: str) -> str:
  return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


@dataclasses.dataclass
class Table:
  columns: Sequence[Column]
  rows: List[List[Any]]
  caption: str = ""
  notes: List[str] = dataclasses.field(default_factory=list)
  budget: str = ""  # a line after the caption: what trained the runs (reports.budget)

  def to_markdown(self) -> str:
    lines = ["| " + " | ".join(c.name for c in self.columns) + " |",
             "| " + " | ".join("---" for _ in self.columns) + " |"]
    for row in self.rows:
      cells = [format_cell(v, c.fmt) for v, c in zip(row, self.columns)]
      lines.append("| " + " | ".join(cells) + " |")
    extra = [text for text in (self.caption, self.budget) if text]
    extra += [f"{i}. {n}" for i, n in enumerate(self.notes, start=1)]
    return "\n".join(lines + ([""] + extra if extra else [])) + "\n"

  def to_latex(self) -> str:
    spec = "l" + "r" * (len(self.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}",
             r"\toprule", " & ".join(latex_escape(c.name) for c in self.columns)
             + r" \\", r"\midrule"]
    for row in self.rows:
      cells = [latex_escape(format_cell(v, c.fmt)) for v, c in zip(row, self.columns)]
      lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if self.caption:
      lines.append(rf"\caption{{{latex_escape(self.caption)}}}")
    if self.budget:
      lines.append(rf"\par\footnotesize {latex_escape(self.budget)}")
    lines += [rf"\par\footnotesize {i}. {latex_escape(n)}"
              for i, n in enumerate(self.notes, start=1)]
    return "\n".join(lines + [r"\end{table}"]) + "\n"

  def to_csv(self) -> str:
    """Raw numbers (full precision), a MeanStd as <name>_mean and <name>_std."""
    paired = [any(isinstance(row[i], MeanStd) for row in self.rows)
              for i in range(len(self.columns))]
    header = []
    for col, two in zip(self.columns, paired):
      header += [f"{col.name}_mean", f"{col.name}_std"] if two else [col.name]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in self.rows:
      cells = []
      for v, two in zip(row, paired):
        if two:
          cells += [v.mean, v.std] if isinstance(v, MeanStd) else ["", ""]
        else:
          cells.append("" if v is None else v)
      writer.writerow(cells)
    return out.getvalue()

  def write(self, out_dir: str, stem: str) -> List[str]:
    """Writes <stem>.md, <stem>.tex and <stem>.csv; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext, text in (("md", self.to_markdown()), ("tex", self.to_latex()),
                      ("csv", self.to_csv())):
      path = os.path.join(out_dir, f"{stem}.{ext}")
      with open(path, "w") as f:
        f.write(text)
      paths.append(path)
    return paths
