"""The base layer: config, data, augmentation, optimiser, models, run directory, errors.

Nothing here knows about training loops, studies or the command line; every
other layer imports from here (import-linter contracts in pyproject.toml).
"""
