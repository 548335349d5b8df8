"""The documentation is true to the code: its commands parse, its links and
paths exist, it holds no words about how the work was organised, the README's
results table is its generator's output, and the Python API page runs."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from mnist_jax.cli import COMMANDS
from mnist_jax.cli.command import parse

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Prose the history check covers: README, docs, configs, experiments, the
# package's docstrings and comments, scripts, pyproject, changelog.
PROSE_ROOTS = ["README.md", "docs", "configs", "experiments", "mnist_jax", "scripts",
               "pyproject.toml", "CHANGELOG.md"]
PROSE_SUFFIXES = {".md", ".py", ".toml", ".sh"}
HISTORY_WORDS = re.compile(
    r"(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|previous|last|this|next"
    r"|earlier|later) s[e]ssion|session [0-9]|\bissues? #?[0-9]+|\bthe helper\b"
    r"|\(lead[,)]|FIELD_NOTES|the host of 20", re.IGNORECASE)
# Repository paths a page names in backticks: under one of these folders.
PATH_TOPS = ("configs", "docs", "experiments", "mnist_jax", "tests", "scripts",
             "examples", "notebooks")
CLI = "python -m mnist_jax"
README_TABLE = re.compile(r"<!-- results: python experiments/make_results.py --readme -->\n"
                          r"(.*?)\n<!-- end of results -->", re.DOTALL)


def rel(path: pathlib.Path) -> str:
  return str(path.relative_to(REPO))


def fenced_blocks(text: str, language: str = "") -> list:
  """The bodies of the page's ``` blocks (only ```language ones if given)."""
  return re.findall(r"^ *```" + re.escape(language) + r"[^\n]*\n(.*?)^ *```", text,
                    re.DOTALL | re.MULTILINE)


def without_blocks(text: str) -> str:
  return re.sub(r"^ *```.*?^ *```", "", text, flags=re.DOTALL | re.MULTILINE)


def cli_lines(text: str) -> list:
  """Every `python -m mnist_jax ...` command of a page: in code blocks (with
  backslash continuations joined, comments dropped) and in inline code."""
  found = []
  for block in fenced_blocks(text):
    for line in block.replace("\\\n", " ").splitlines():
      if CLI + " " in line:
        found.append(line[line.index(CLI):].split(" #")[0].strip())
  for span in re.findall(r"`([^`]+)`", without_blocks(text).replace("\n", " ")):
    if CLI + " " in span:
      found.append(span[span.index(CLI):].strip())
  # A command quoted inside another (gcloud's --command="... python -m mnist_jax ...").
  return [line[:line.rindex('"')] if line.count('"') % 2 else line for line in found]


def command_cases():
  for page in PAGES:
    for line in cli_lines(page.read_text()):
      yield pytest.param(line, id=f"{rel(page)}: {line[len(CLI) + 1:][:60]}")


@pytest.mark.parametrize("line", list(command_cases()))
def test_every_command_in_the_docs_parses_with_its_flags(line, monkeypatch):
  """Parsed in process by the command's own flags (nothing runs): a flag that
  was renamed or removed, or a config file that moved, fails here."""
  monkeypatch.chdir(REPO)  # config files are named from the checkout's root
  words = shlex.split(line.replace("[", " ").replace("]", " "))[len(CLI.split()):]
  words = [w.rstrip('"') for w in words if w not in ("...", "|")]
  if words and words[0].isupper():
    return  # `python -m mnist_jax COMMAND`: a placeholder for any command
  assert words and words[0] in COMMANDS, f"unknown command in {line!r}"
  if "-h" in words or len(words) == 1:
    return  # the command named in prose, or its help
  parse(COMMANDS[words[0]], words[1:])


def test_the_command_parser_check_can_fail():
  with pytest.raises(Exception):
    parse(COMMANDS["train"], ["--config", "configs/cnn.py", "--no_such_flag"])


def slug(heading: str) -> str:
  """GitHub's anchor for a Markdown heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def anchors(page: pathlib.Path) -> set:
  text = without_blocks(page.read_text())
  return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def link_cases():
  for page in PAGES + [REPO / "CHANGELOG.md", REPO / "experiments" / "README.md"]:
    text = without_blocks(page.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if not re.match(r"[a-z]+:", target):
        yield pytest.param(page, target, id=f"{rel(page)} -> {target}")


@pytest.mark.parametrize("page,target", list(link_cases()))
def test_every_relative_link_exists(page, target):
  path, _, anchor = target.partition("#")
  linked = (page.parent / path).resolve() if path else page
  assert linked.exists(), f"{rel(page)} links to {target}, which does not exist"
  if anchor and linked.suffix == ".md":
    assert anchor in anchors(linked), f"{rel(page)}: no heading '#{anchor}' in {path}"


def named_paths(text: str) -> list:
  """Repository paths in a page's inline code and code blocks
  (`mnist_jax/engine/loop.py`, `configs/cnn.py`, ...); placeholders
  (`experiments/NAME.py`, `<workdir>`) and the API page's example of a
  missing file excepted."""
  words = []
  for span in re.findall(r"`([^`]+)`", text.replace("\n", " ")) + fenced_blocks(text):
    words += span.replace(",", " ").replace("(", " ").replace(")", " ").split()
  paths = []
  for word in words:
    word = word.strip("'\".:;").split("#")[0]
    if (word.split("/")[0] in PATH_TOPS and "/" in word and "no_such" not in word
        and not re.search(r"[<>*{}$]|/[A-Z_]+\b", word)):
      paths.append(word)
  return paths


def path_cases():
  for page in PAGES:
    for path in sorted(set(named_paths(page.read_text()))):
      yield pytest.param(page, path, id=f"{rel(page)}: {path}")


@pytest.mark.parametrize("page,path", list(path_cases()))
def test_every_repository_path_named_exists(page, path):
  assert (REPO / path).exists(), f"{rel(page)} names {path}, which does not exist"


def prose_files():
  for root in PROSE_ROOTS:
    path = REPO / root
    yield from ([path] if path.is_file()
                else sorted(p for p in path.rglob("*") if p.suffix in PROSE_SUFFIXES))


def test_no_words_about_how_the_work_was_organised():
  hits = [f"{rel(path)}:{n}: {line.strip()}"
          for path in prose_files()
          for n, line in enumerate(path.read_text().splitlines(), 1)
          if HISTORY_WORDS.search(line)]
  assert not hits, "\n".join(hits)


def test_the_history_check_can_fail():
  for line in ("as the fourth session measured", "see issue 16", "FIELD_NOTES says",
               "(lead, 16:49 UTC)", "the helper wrote"):
    assert HISTORY_WORDS.search(line), line


def make_results():
  spec = importlib.util.spec_from_file_location(
      "make_results", REPO / "experiments" / "make_results.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_readme_results_table_is_its_generators_output():
  """`python experiments/make_results.py --readme` prints the README's table,
  so it cannot drift from the record of the measured runs."""
  found = README_TABLE.search((REPO / "README.md").read_text())
  assert found, "README.md lost the results markers"
  printed = subprocess.run([sys.executable, "experiments/make_results.py", "--readme"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout
  assert found.group(1) == printed.rstrip("\n")


def test_readme_table_has_one_row_per_recorded_run(tmp_path):
  record = tmp_path / "runs.json"
  record.write_text('{"hardware": "a test machine", "runs": [{"config": "configs/a.py", '
                    '"epochs": 2, "test_accuracy": "90.00%", "wall_time": "3 s", '
                    '"command": "make a", "measured": "2000-01-01", "note": "n"}]}')
  table = make_results().readme_table(str(record)).splitlines()
  assert table[0] == "Measured on a test machine."
  assert table[4] == "| `configs/a.py` | 2 | 90.00% | 3 s [1] | `make a` |"
  assert table[-1] == "- [1] 2000-01-01: n."


def test_api_names_are_documented_and_import_lazily():
  import mnist_jax
  api = (REPO / "docs" / "api.md").read_text()
  for name in mnist_jax.__all__:
    assert callable(getattr(mnist_jax, name)), name
    assert f"`{name}" in api, f"docs/api.md does not document {name}"
  with pytest.raises(AttributeError):
    getattr(mnist_jax, "no_such_name")
  loaded = subprocess.run(
      [sys.executable, "-c", "import sys, mnist_jax; print('jax' in sys.modules)"],
      cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
  assert loaded == "False"


@pytest.mark.slow
@pytest.mark.real_data
def test_api_page_examples_run(mnist_dir, tmp_path, monkeypatch, capsys):
  """Every python block of docs/api.md, top to bottom in one namespace, as a
  user pastes them (runs/ written under a temporary folder)."""
  monkeypatch.setenv("MNIST_DIR", mnist_dir)
  monkeypatch.chdir(tmp_path)
  (tmp_path / "examples").symlink_to(REPO / "examples")
  namespace = {}
  for i, block in enumerate(fenced_blocks((REPO / "docs" / "api.md").read_text(), "python")):
    exec(compile(block, f"docs/api.md, python block {i + 1}", "exec"), namespace)
  out = capsys.readouterr().out
  assert "epoch 1: test accuracy" in out
  assert (tmp_path / "runs" / "api" / "kernel_size" / "tables").is_dir()
  assert "does not exist" in out or "not found" in out  # the UserError example
