"""What every command shares: its own flags, their parsing and help, and the
flags several commands take (data folder, device set-up).

Each command parses into its own `absl.flags.FlagValues`, so a flag of another
command is an unknown flag, and `--config` keeps ml_collections' typed
`--config.FIELD=VALUE` overrides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from absl import flags
from ml_collections import config_flags

from mnist_jax.core import config as config_lib, runtime
from mnist_jax.core.errors import UserError

PROGRAM = "python -m mnist_jax"


@dataclasses.dataclass(frozen=True)
class Command:
  """One subcommand: `define(fv, argv)` declares its flags, `run(fv, args)` does
  the work with the parsed flags and the positional `args`; returns the exit status."""
  name: str
  summary: str
  define: Callable[[flags.FlagValues, Sequence[str]], None]
  run: Callable[[flags.FlagValues, List[str]], int]
  usage: str = ""  # after the command name: required flags and positional args
  required: Tuple[str, ...] = ()
  positional: Optional[str] = None  # what its positional args are; None: it takes none
  # More help after the flags, from the words given (the study command lists
  # the studies of its --experiments_dir).
  details: Optional[Callable[[Sequence[str]], str]] = None


def _one_line(error: Exception) -> str:
  """absl/config_flags messages can be multi-line reprs of a KeyError."""
  text = str(error)
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]  # a repr'd string: drop its quotes and escapes
  text = text.replace("\\n", " ").replace("\\'", "'")
  return " ".join(text.split())


def parse(command: Command, argv: Sequence[str]) -> Tuple[flags.FlagValues, List[str]]:
  """`argv` (after the command name) parsed by the command's own flags:
  (flag values, positional args). Unknown or bad flags raise UserError."""
  fv = flags.FlagValues()
  command.define(fv, [command.name, *argv])
  try:
    args = _parse_flags(command.name, fv, argv)
  except (OSError, SyntaxError) as e:
    raise _unreadable_config(command.name, _config_path(argv), e) from None
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    # config_flags reports a misspelt --config.FIELD as one of these.
    raise UserError(f"{command.name}: {_one_line(e)} (`{PROGRAM} {command.name} -h` "
                    "lists its flags).") from None
  missing = [name for name in command.required if fv[name].value in (None, [])]
  if missing:
    raise UserError(f"{command.name} needs --{missing[0]} (`{PROGRAM} "
                    f"{command.name} -h` lists its flags).")
  if args and command.positional is None:
    raise UserError(f"{command.name} takes no arguments besides its flags "
                    f"(got {' '.join(args)}).")
  return fv, args


def _parse_flags(name: str, fv: flags.FlagValues, argv: Sequence[str]) -> List[str]:
  """The positional args; the config file (if any) is loaded and checked here:
  whatever its own code raises (sys.exit included) is a UserError naming it."""
  path = _config_path(argv)
  try:
    with _absl_warnings_off():  # config_flags warns of get_config() returning None
      _forget_config_module()
      args = fv([name, *argv])[1:]
      _load_config(fv)
  except (Exception, SystemExit) as e:
    if path == "(none)":
      raise
    error = config_lib.config_file_error(path, e)
    if error is None and isinstance(e, AttributeError) and "'get_config'" in str(e):
      error = config_lib.no_get_config(path)
    overridden = isinstance(e, (KeyError, AttributeError))
    if error is None and overridden and os.access(path.split(":", 1)[0], os.R_OK):
      # An override of a get_config() that returned no config fails first:
      # load the file again (config_flags kept nothing) to say why.
      with _absl_warnings_off():
        _forget_config_module()
        loaded = fv["config"].parser.parse(path)
      _check_config_type(name, loaded, path)
    if error is None:
      raise
    raise UserError(f"{name}: {error}") from None
  if "config" in fv and fv["config"].present:
    _check_config_type(name, fv["config"].value, path)
    config_lib.split_text_lists(fv.config)
  return args


def _check_config_type(name: str, config, path: str) -> None:
  try:
    config_lib.checked_config(path.split(":", 1)[0], config)
  except UserError as e:
    raise UserError(f"{name}: {e}") from None


def _forget_config_module() -> None:
  """config_flags loads a config file as the module 'config_config' with
  SourceFileLoader.load_module, which runs the file in the module of that name
  loaded before, if any: a second command in one process (a test, a notebook)
  would keep the first file's get_config() where the second has none."""
  sys.modules.pop("config_config", None)


@contextlib.contextmanager
def _absl_warnings_off() -> Iterator[None]:
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _load_config(fv: flags.FlagValues) -> None:
  """config_flags keeps a config file it cannot read as an error that is
  raised when the config is first used (deep in a command): use it now."""
  if "config" in fv and fv["config"].value is not None:
    getattr(fv["config"].value, "keys", None)  # config_flags' stand-in raises here


def flag_in(argv: Sequence[str], name: str) -> Optional[str]:
  """The value of --NAME in `argv`, read before (or without) parsing it."""
  for i, word in enumerate(argv):
    if word.lstrip("-") == name and i + 1 < len(argv):
      return argv[i + 1]
    if word.lstrip("-").startswith(name + "="):
      return word.split("=", 1)[1]
  return None


def _config_path(argv: Sequence[str]) -> str:
  """The --config value in `argv` (config_flags has none to give when its file
  failed to load while it parsed a --config.FIELD override)."""
  return flag_in(argv, "config") or "(none)"


def _unreadable_config(name: str, path: str, error: Exception) -> UserError:
  """A config file that is missing, unreadable or not Python, in one line."""
  if isinstance(error, SyntaxError):
    return UserError(f"{name}: the config file {path} is not valid Python (line "
                     f"{error.lineno}: {error.msg}): correct it, or give another "
                     "config, e.g. --config configs/cnn.py.")
  why = ("does not exist" if not os.path.exists(path)
         else f"cannot be read ({_one_line(error.__cause__ or error)})")
  return UserError(f"{name}: the config file {path} {why}: give a config file, e.g. "
                   "--config configs/cnn.py.")


def help_text(command: Command, argv: Sequence[str] = ()) -> str:
  """The command's usage line, its flags (absl's own help for each flag) and
  its details, for the words `argv` given after the command's name."""
  fv = flags.FlagValues()
  command.define(fv, [command.name])
  lines = [f"usage: {PROGRAM} {command.name} {command.usage}".rstrip(), "",
           command.summary + ".", "", "flags:"]
  for name in fv:
    flag = fv[name]
    if name != flag.name:
      continue  # a short name of a flag listed under its long name
    switch = "--[no]" if flag.boolean else "--"
    kind = f" ({flag.parser.syntactic_help})" if flag.parser.syntactic_help else ""
    shown = not (flag.default is None or flag.default is False or flag.default == "")
    default = f" (default: {flag.default_as_str})" if shown else ""
    lines.append(f"  {switch}{name}: {flag.help}{kind}{default}")
  if command.details is not None:
    lines += ["", command.details(argv)]
  return "\n".join(lines)


def define_config(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  config_flags.DEFINE_config_file(
      "config", None, "config file (e.g. configs/cnn.py); override any field with "
      "--config.FIELD=VALUE", flag_values=fv, lock_config=True, sys_argv=list(argv))


def config_overrides(fv: flags.FlagValues) -> List[str]:
  """'FIELD: file's value -> value given' for each field of the --config file
  that the command line changed (its --config.FIELD=VALUE overrides)."""
  path = config_flags.get_config_filename(fv["config"])
  with _absl_warnings_off():
    _forget_config_module()
    as_written = fv["config"].parser.parse(path)  # the file's get_config() again
  from mnist_jax.core import run_dir
  return run_dir.config_differences(run_dir.config_as_dict(as_written),
                                    run_dir.config_as_dict(fv.config))


def define_data_dir(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("data_dir", None, "folder with the four original MNIST .gz "
                      "files (default: $MNIST_DIR)", flag_values=fv)


def define_device_flags(fv: flags.FlagValues) -> None:
  """Flags read by `start_jax`, for the commands that run a model on devices."""
  flags.DEFINE_bool("deterministic", True, "deterministic GPU kernels "
                    "(--xla_gpu_deterministic_ops); --nodeterministic trades bitwise "
                    "reproducibility for speed. No effect on CPU", flag_values=fv)
  flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize first: one "
                    "process per host (TPU pod slice, GPU cluster)", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for "
                      "--multihost where JAX cannot detect it (e.g. localhost runs)",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "number of processes, for --multihost "
                       "where JAX cannot detect it", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "this process's index, for --multihost "
                       "where JAX cannot detect it", flag_values=fv)


def start_jax(fv: flags.FlagValues) -> None:
  """XLA flags, multi-host set-up and the compilation cache: all must precede
  JAX's first device use."""
  runtime.set_gpu_determinism(fv.deterministic)
  runtime.enable_compilation_cache()
  if fv.multihost:
    runtime.init_multihost(fv.coordinator_address, fv.num_processes, fv.process_id)
