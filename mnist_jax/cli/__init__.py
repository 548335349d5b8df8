"""Command line: `python -m mnist_jax COMMAND [flags]` (or `mnist-jax COMMAND ...`).

  train     --config configs/cnn.py --workdir runs/cnn [--config.num_epochs=3 ...]
            [--seeds 0,1,2] [--force] [--data_dir D] [--nodeterministic] [--multihost ...]
  evaluate  --workdir runs/cnn [--data_dir D]
  plot      --workdir runs/cnn [--format png|pdf] [--digit 0] [--data_dir D]
  predict   --workdir runs/cnn IMAGE_OR_FOLDER... [--top 3] [--json]
            [--figure out.png] [--no-preprocess] [--uncertain_below 0.8]
  ensemble  --workdirs runs/a,runs/b,runs/c [--split test|validation] [--out DIR]
  export    --workdir runs/cnn --out DIR
  study     NAME [--preset cpu|full] [--quick] [--out DIR] [--data_dir D]
            [--vmap_seeds] [--tables_only] [--points P1,P2] [--seeds 0,1]
            [--experiments_dir DIR]
  frontier  [--recipe cpu|full] [--out DIR] [--data_dir D] [--tables_only]
  benchmark [--configs C1,C2] [--variants FIELD=V1,V2] [--rounds 7] [--steps 20]
            [--seeds N] [--e2e_split SPLIT] [--out FILE] [--against torch]
  speedrun  [--seeds 0,1,2,3,4] [--out DIR] [--config_file C] [--set FIELD=VALUE] [--group]

Each command has its own flags (`python -m mnist_jax COMMAND -h`); a flag of
another command is an error. Kept thin on purpose: every command calls a
library function. Bad input ends in one line on stderr, `error: ...`, and exit
status 2, never a traceback; Ctrl-C ends with status 130.
"""

import os

# TensorFlow is only tfds's reader here: quiet its C++ start-up chatter and keep
# it off oneDNN. The one place this is set; it precedes every TF import, as the
# library imports TF only when it loads data.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import atexit  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from typing import Dict, Optional, Sequence  # noqa: E402

from mnist_jax.cli import experiments, runs, tools  # noqa: E402
from mnist_jax.cli.command import PROGRAM, Command, help_text, parse  # noqa: E402
from mnist_jax.core import runtime  # noqa: E402
from mnist_jax.core.errors import UserError  # noqa: E402

COMMANDS: Dict[str, Command] = {
    c.name: c for c in runs.COMMANDS + experiments.COMMANDS + tools.COMMANDS}
_HELP = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def usage() -> str:
  lines = [f"usage: {PROGRAM} COMMAND [flags]   ({PROGRAM} COMMAND -h: its flags)",
           "", "commands:"]
  lines += [f"  {c.name:10s} {c.summary}" for c in COMMANDS.values()]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
  """Runs `argv` (the words after the program name); returns the exit status."""
  runtime.setup_xla()  # before any command starts JAX
  if not argv or argv[0] in _HELP + ("help",):
    print(usage())
    return 0 if argv else 2
  if argv[0] not in COMMANDS:
    raise UserError(f"unknown command {argv[0]!r}: use one of {', '.join(COMMANDS)}.")
  command, rest = COMMANDS[argv[0]], list(argv[1:])
  flag_words = rest[:rest.index("--")] if "--" in rest else rest
  if any(word in _HELP for word in flag_words):
    print(help_text(command, rest))
    return 0
  fv, args = parse(command, rest)
  runtime.check_xla_flags()
  try:
    return command.run(fv, args)
  except (RuntimeError, AssertionError) as e:  # JAX_PLATFORMS: a platform not here
    error = runtime.platform_error(e)
    if error is None:
      raise
    raise error from None


def run(argv: Optional[Sequence[str]] = None) -> None:
  """The entry point: `main` with the one error handler; exits the process."""
  try:
    code = main(sys.argv[1:] if argv is None else argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    code = e.exit_code
  except KeyboardInterrupt:
    code = interrupted()
  finally:
    # Exiting runs JAX's and orbax's atexit hooks, where a Ctrl-C would be a
    # KeyboardInterrupt traceback and exit status 0. Hooks run last-registered
    # first, so this one starts the exit: from then on Ctrl-C ends the process.
    atexit.register(signal.signal, signal.SIGINT, _exit_interrupted)
  sys.exit(code)


def _exit_interrupted(signum, frame) -> None:
  os._exit(interrupted())


def interrupted() -> int:
  """Says so on stderr; returns the exit status of a Ctrl-C (128 + SIGINT)."""
  print("interrupted", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  return 130
