"""The studies declared in a folder of study files (a checkout's experiments/).

A file NAME.py there declares the study NAME when it assigns `STUDY` at its
top level (`STUDY = Study("NAME", [...])`, with PRESETS and optionally report
and after_run_for). The files are found by reading them, without running
them, so that listing the studies costs no imports; a study's file runs
only when that study is run. The folder is the working directory's
./experiments when it has one, else the experiments/ folder of the checkout
this package was imported from (`--experiments_dir` names another).
"""

from __future__ import annotations

import ast
import gc
import importlib.util
import os
import sys
import types
from typing import Dict, Optional

from mnist_jax.core.config import REPO_ROOT
from mnist_jax.core.errors import UserError

DEFAULT_FOLDER = "experiments"


def folder_or_default(folder: Optional[str] = None) -> str:
  """`folder`, else ./experiments if the working directory has it, else the
  experiments/ folder beside this package."""
  if folder:
    return folder
  return DEFAULT_FOLDER if os.path.isdir(DEFAULT_FOLDER) else os.path.join(REPO_ROOT,
                                                                         DEFAULT_FOLDER)


def _parse(source: str, path: str) -> ast.Module:
  """ast.parse with garbage collection paused.

  CPython 3.11 keeps one AST-building depth counter per interpreter: a
  finalizer run by a collection during the parse that parses again (3.11's
  traceback formatting does, e.g. in an unraisable-exception hook reporting a
  coroutine never awaited) leaves the counter off, and the outer parse fails with
  "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
  """
  was_enabled = gc.isenabled()
  gc.disable()
  try:
    return ast.parse(source, filename=path)
  finally:
    if was_enabled:
      gc.enable()


def _declaration(path: str) -> Optional[str]:
  """The first line of the file's docstring if it assigns STUDY at its top
  level ('' without a docstring), else None."""
  try:
    with open(path, encoding="utf-8") as f:
      tree = _parse(f.read(), path)
  except (OSError, SyntaxError, ValueError):
    return None  # not a study file this listing can read; running it says why
  for node in tree.body:
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    if any(isinstance(t, ast.Name) and t.id == "STUDY" for t in targets):
      return (ast.get_docstring(tree) or "").strip().split("\n")[0]
  return None


def find_studies(folder: Optional[str] = None) -> Dict[str, str]:
  """{name: the first line of its docstring} of each study file in the folder,
  by name."""
  folder = folder_or_default(folder)
  found = {}
  if os.path.isdir(folder):
    for entry in sorted(os.listdir(folder)):
      name, ext = os.path.splitext(entry)
      if ext == ".py" and name.isidentifier():
        summary = _declaration(os.path.join(folder, entry))
        if summary is not None:
          found[name] = summary
  return found


def load_file(name: str, folder: Optional[str] = None) -> types.ModuleType:
  """<folder>/NAME.py as the module `experiments.NAME` (the one already
  imported from that file, if any, so that it is never declared twice in one
  process)."""
  path = os.path.abspath(os.path.join(folder_or_default(folder), f"{name}.py"))
  module_name = f"experiments.{name}"
  loaded = sys.modules.get(module_name)
  if loaded is not None and os.path.abspath(getattr(loaded, "__file__", "")) == path:
    return loaded
  if not os.path.isfile(path):
    raise UserError(f"{path} not found: studies and the frontier are declared in the "
                    "checkout's experiments/ folder; run from a checkout of mnist_jax, "
                    "or name the folder with --experiments_dir.")
  spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    sys.modules.pop(module_name, None)
    raise
  return module


def load_study(name: str, folder: Optional[str] = None) -> types.ModuleType:
  """The study file NAME.py of the folder, checked: a UserError names what is wrong."""
  found = find_studies(folder)
  if name not in found:
    where = folder_or_default(folder)
    raise UserError(f"unknown study {name!r}: use one of {', '.join(found) or '(none)'} "
                    f"(the files in {where} that declare STUDY).")
  module = load_file(name, folder)
  if module.STUDY.name != name:
    raise UserError(f"{module.__file__} declares the study {module.STUDY.name!r}: name "
                    f"it {name!r}, as its file, or rename the file.")
  if not isinstance(getattr(module, "PRESETS", None), dict):
    raise UserError(f"{module.__file__} declares no PRESETS: add PRESETS = "
                    "{'cpu': Preset(...), ...} (docs/extending.md).")
  return module
