"""Commands on one run directory or a few: train, evaluate, plot, predict,
ensemble, export.

Each command imports its library when it runs, so that `-h` and a bad flag are
answered without importing JAX.
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

from absl import flags
from ml_collections import config_flags

from mnist_jax.cli.command import (Command, config_overrides, define_config,
                                   define_data_dir, define_device_flags, start_jax)
from mnist_jax.core import config as config_lib, runtime
from mnist_jax.core.errors import UserError


def _define_workdir(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "run directory: config.json, metrics.jsonl, "
                      "checkpoints", flag_values=fv)


def _define_train(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  define_config(fv, argv)
  _define_workdir(fv)
  flags.DEFINE_list("seeds", None, "train the config once per seed, seed S in "
                    "WORKDIR/seedS, e.g. 0,1,2 (default: the config's seed, in WORKDIR)",
                    flag_values=fv)
  flags.DEFINE_bool("force", False, "start the run over, deleting what the workdir "
                    "holds (default: resume a run of the same config; refuse "
                    "another config and list the differences)",
                    flag_values=fv)
  define_data_dir(fv)
  define_device_flags(fv)


def parse_seeds(texts: List[str], default: str = "the config's seed") -> List[int]:
  """The --seeds list as whole numbers; `default` says what no --seeds trains."""
  if not texts:
    raise UserError("--seeds is empty (--seeds=): give seeds separated by commas, "
                    f"e.g. --seeds 0,1,2, or leave --seeds out to train {default}.")
  try:
    seeds = [int(s) for s in texts]
  except ValueError:
    raise UserError(f"--seeds {','.join(texts)}: give whole numbers separated by "
                    "commas, e.g. --seeds 0,1,2.") from None
  for seed in seeds:  # the range config.seed allows
    config_lib.validate_seed(seed, f"--seeds: seed {seed}")
  if len(set(seeds)) != len(seeds):
    raise UserError(f"--seeds {','.join(texts)}: give each seed once.")
  return seeds


def _final_line(config, final) -> str:
  when = (f"of epoch {final['epoch']}, chosen by validation accuracy"
          if config.select == "best_val" else f"after {final['epoch']} epochs")
  return (f"final test accuracy {final['test_accuracy']:.4f} "
          f"(loss {final['test_loss']:.4f}) {when}")


def _config_line(fv: flags.FlagValues) -> str:
  """The config file trained and the fields the command line changed in it."""
  path = config_flags.get_config_filename(fv["config"])
  changes = config_overrides(fv)
  if not changes:
    return f"config {path}, as written (no --config.FIELD overrides)"
  return "\n  ".join([f"config {path}, changed by the command line (file's value "
                      "-> value used):", *changes])


def train(fv: flags.FlagValues, args: List[str]) -> int:
  config = fv.config
  print(_config_line(fv), flush=True)
  if fv.seeds is None:  # the config's seed, in WORKDIR itself
    seeds, workdirs = [config.seed], [fv.workdir]
  else:
    seeds = parse_seeds(fv.seeds)
    workdirs = [os.path.join(fv.workdir, f"seed{s}") for s in seeds]
  start_jax(fv)
  from mnist_jax.engine.loop import train_runs
  finals = train_runs(config, seeds, workdirs, mnist_dir=fv.data_dir, force=fv.force)
  for seed, workdir, final in zip(seeds, workdirs, finals):
    who = "" if fv.seeds is None else f"seed {seed}: "
    print(f"{who}{_final_line(config, final)}; run saved in {workdir}")
  return 0


def _define_evaluate(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  _define_workdir(fv)
  define_data_dir(fv)
  define_device_flags(fv)


def evaluate(fv: flags.FlagValues, args: List[str]) -> int:
  start_jax(fv)
  from mnist_jax.engine.restore import restore_and_evaluate
  result = restore_and_evaluate(fv.workdir, mnist_dir=fv.data_dir)
  where = f"step {result['step']}" + (f", {result['position']}" if result["position"] else "")
  if result["final_step"] is None:
    print(f"warning: {fv.workdir} is unfinished: evaluating its newest readable "
          f"checkpoint ({where}), not a final one.", file=sys.stderr)
  elif result["final_step"] != result["step"]:
    print(f"warning: evaluating the checkpoint of {where}, not the run's final one "
          f"(step {result['final_step']}, which cannot be read or was deleted): the "
          "numbers differ from those metrics.jsonl reports.", file=sys.stderr)
  print(f"checkpoint of {where}: test loss {result['loss']:.4f}  test accuracy "
        f"{result['accuracy']:.4f} ({result['count']} images)")
  return 0


def _define_plot(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  _define_workdir(fv)
  flags.DEFINE_enum("format", "png", ["png", "pdf"], "figure file format", flag_values=fv)
  flags.DEFINE_integer("digit", 0, "index of the test image whose feature maps and "
                       "softmax output are drawn", flag_values=fv)
  define_data_dir(fv)


def plot(fv: flags.FlagValues, args: List[str]) -> int:
  runtime.enable_compilation_cache()  # no device flags here: only the cache
  from mnist_jax.inference.plots import make_figures
  written, skipped = make_figures(fv.workdir, fv.format, fv.digit, mnist_dir=fv.data_dir)
  for name, reason in skipped.items():
    print(f"skipped {name}: {reason}")
  for path in written.values():
    print(f"wrote {path}")
  return 0


def _define_predict(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  _define_workdir(fv)
  flags.DEFINE_integer("top", 1, "also list the TOP most probable digits (1 to 10)",
                       flag_values=fv)
  flags.DEFINE_bool("json", False, "print the results as JSON", flag_values=fv)
  flags.DEFINE_string("figure", None, "save each picture's preprocessing, step by "
                      "step, and its prediction to this file", flag_values=fv)
  flags.DEFINE_integer("figure_limit", 12, "--figure draws the first FIGURE_LIMIT "
                       "pictures and says how many it left out", flag_values=fv)
  flags.DEFINE_bool("no-preprocess", False, "the images are already 28x28 "
                    "MNIST-style (light digit on black): use them as they are",
                    flag_values=fv)
  flags.DEFINE_float("uncertain_below", 0.8, "a top probability under this is "
                     "reported as uncertain (0 to 1)", flag_values=fv)
  # numpy, scipy and scikit-image, no JAX: the defaults live in one place.
  from mnist_jax.inference.digits import Settings
  defaults = Settings()
  flags.DEFINE_float("background_scale", defaults.background_scale, "the paper's "
                     "light is estimated over windows this fraction of the picture's "
                     "shorter side: wider than a stroke, narrower than a shadow",
                     flag_values=fv)
  flags.DEFINE_float("min_contrast", defaults.min_contrast, "ink differs from its "
                     "paper by at least this fraction of the paper's light",
                     flag_values=fv)
  flags.DEFINE_float("min_part", defaults.min_part, "pieces of ink smaller than this "
                     "fraction of the digit's largest piece are specks",
                     flag_values=fv)
  flags.DEFINE_bool("deskew", defaults.deskew, "shear the digit upright by its "
                    "second moments (--nodeskew keeps its slant)", flag_values=fv)


def predict(fv: flags.FlagValues, args: List[str]) -> int:
  if not 1 <= fv.top <= 10:
    raise UserError(f"--top {fv.top}: use a number from 1 to 10.")
  if not 0.0 <= fv.uncertain_below <= 1.0:
    raise UserError(f"--uncertain_below {fv.uncertain_below}: use a number from 0 to 1.")
  if fv.figure_limit < 1:
    raise UserError(f"--figure_limit {fv.figure_limit}: use a number of 1 or more.")
  if not args:
    raise UserError("predict needs image files or folders after the flags.")
  from mnist_jax.inference.digits import Settings
  settings = Settings(fv.background_scale, fv.min_contrast, fv.min_part,
                      fv.deskew).check()
  runtime.enable_compilation_cache()  # no device flags here: only the cache
  from mnist_jax.inference.predict import report_predictions
  return report_predictions(fv.workdir, args, top=fv.top, as_json=fv.json,
                            figure=fv.figure, preprocess=not fv["no-preprocess"].value,
                            settings=settings, uncertain_below=fv.uncertain_below,
                            figure_limit=fv.figure_limit)


def _define_ensemble(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  flags.DEFINE_list("workdirs", None, "the runs to combine, comma-separated",
                    flag_values=fv)
  flags.DEFINE_enum("split", "test", ["test", "validation"], "score the members on "
                    "the test set or on their validation split", flag_values=fv)
  flags.DEFINE_string("out", None, "also write the result to OUT/ensemble.json",
                      flag_values=fv)
  define_data_dir(fv)
  define_device_flags(fv)


def ensemble(fv: flags.FlagValues, args: List[str]) -> int:
  start_jax(fv)
  from mnist_jax.inference.ensemble import report
  report(fv.workdirs, fv.split, fv.out, mnist_dir=fv.data_dir)
  return 0


def _define_export(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  _define_workdir(fv)
  flags.DEFINE_string("out", None, "new folder for the exported files (refused if "
                      "it exists)", flag_values=fv)


def export(fv: flags.FlagValues, args: List[str]) -> int:
  from mnist_jax.inference.export import METADATA_FILE, export_run
  metadata = export_run(fv.workdir, fv.out)
  print(f"exported the run of test accuracy {metadata['test_accuracy']:.4f}")
  for name in (*metadata["files"].values(), METADATA_FILE):
    print(f"wrote {os.path.join(fv.out, name)}")
  return 0


COMMANDS = [
    Command("train", "train a config and evaluate it on the test set (a workdir "
            "holding the same config resumes from its newest checkpoint)",
            _define_train, train, usage="--config C --workdir W [--config.FIELD=VALUE ...] "
            "[flags]", required=("config", "workdir")),
    Command("evaluate", "restore a trained run and evaluate it on the test set",
            _define_evaluate, evaluate, usage="--workdir W [flags]", required=("workdir",)),
    Command("plot", "draw a trained run's figures into WORKDIR/figures/", _define_plot,
            plot, usage="--workdir W [flags]", required=("workdir",)),
    Command("predict", "recognise the digit in your own image files", _define_predict,
            predict, usage="--workdir W [flags] IMAGE_OR_FOLDER...", required=("workdir",),
            positional="image files or folders"),
    Command("ensemble", "combine trained runs by averaged probabilities and by "
            "majority vote", _define_ensemble, ensemble,
            usage="--workdirs W1,W2,... [flags]", required=("workdirs",)),
    Command("export", "write a trained run as a jax.export function and a TensorFlow "
            "SavedModel that need neither this package nor flax", _define_export,
            export, usage="--workdir W --out DIR", required=("workdir", "out")),
]
