"""`python -m mnist_jax COMMAND ...`: see mnist_jax.cli."""

from mnist_jax.cli import run

if __name__ == "__main__":
  run()
