"""Code a config names as 'module:name' (a user's model, a train step variant)."""

import importlib
import os
import sys


def import_from_working_directory(module_name: str):
  """`import module_name`, the working directory searched first, as `python -m`
  does (an installed entry point such as `mnist-jax` does not)."""
  cwd = os.getcwd()
  sys.path.insert(0, cwd)
  try:
    return importlib.import_module(module_name)
  finally:
    sys.path.remove(cwd)
