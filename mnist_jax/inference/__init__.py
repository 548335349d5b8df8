"""A finished run: restore it, predict your own digits, ensembles, robustness
curves and figures, export it for jax or TensorFlow alone. Imports `engine`
and `core`."""
