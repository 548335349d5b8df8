"""`python -m mnist_jax COMMAND ...`: see mnist_jax.cli."""

import sys

if __name__ == "__main__":
  try:
    from mnist_jax.cli import run
  except KeyboardInterrupt:  # Ctrl-C while the CLI's modules load
    print("interrupted", file=sys.stderr)
    sys.exit(130)
  run()
