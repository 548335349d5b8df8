"""A finished run: restore it, predict your own digits, ensembles, robustness
curves and figures. Imports `engine` and `core`."""
