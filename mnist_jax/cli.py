"""Command line: `python -m mnist_jax COMMAND [flags]`.

  train     --config configs/cnn.py --workdir runs/cnn [--config.num_epochs=3 ...]
            [--seeds 0,1,2] [--force] [--nodeterministic] [--multihost ...]
  evaluate  --workdir runs/cnn
  plot      --workdir runs/cnn [--format png|pdf] [--digit 0]
  predict   --workdir runs/cnn IMAGE_OR_FOLDER... [--top 3] [--json]
            [--figure out.png] [--no-preprocess]
  ensemble  --workdirs runs/a,runs/b,runs/c [--split test|validation] [--out DIR]

`train` on a workdir that holds the same config resumes it from its newest
checkpoint.

Kept thin on purpose: every command calls a library function. Bad input ends
in one line on stderr, `error: ...`, and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Dict, List, Tuple

# Quiet TensorFlow's C++ start-up chatter (it is only used by tfds to read data).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mnist_jax.core.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (e.g. configs/cnn.py); override fields with "
    "--config.FIELD=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: config.json, metrics.jsonl, "
                    "checkpoints.")
flags.DEFINE_string("data_dir", None, "Folder with the four original MNIST .gz "
                    "files (default: $MNIST_DIR).")
flags.DEFINE_list("seeds", None, "train: seeds to train together in one program, "
                  "e.g. 0,1,2; seed S goes to WORKDIR/seedS (default: config.seed, "
                  "in WORKDIR).")
flags.DEFINE_bool("force", False, "Overwrite a workdir that holds a run with "
                  "another config (default: refuse and list the differences).")
flags.DEFINE_bool("deterministic", True, "Deterministic GPU kernels "
                  "(--xla_gpu_deterministic_ops); --nodeterministic trades "
                  "bitwise reproducibility for speed. No effect on CPU.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize first: "
                  "one process per host (TPU pod slice, GPU cluster).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for "
                    "--multihost where JAX cannot detect it (e.g. localhost runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes, for --multihost "
                     "where JAX cannot detect it.")
flags.DEFINE_integer("process_id", None, "This process's index, for --multihost "
                     "where JAX cannot detect it.")
flags.DEFINE_string("format", "png", "plot: figure file format, png or pdf.")
flags.DEFINE_integer("digit", 0, "plot: index of the test image whose feature "
                     "maps and softmax output are drawn.")
flags.DEFINE_integer("top", 1, "predict: also list the TOP most probable digits.")
flags.DEFINE_boolean("json", False, "predict: print the results as JSON.")
flags.DEFINE_string("figure", None, "predict: save the images as the network saw "
                    "them, with their predictions, to this file.")
flags.DEFINE_boolean("no-preprocess", False, "predict: the images are already "
                     "28x28 MNIST-style (light digit on black): use them as they are.")
flags.DEFINE_list("workdirs", None, "ensemble: the runs to combine, comma-separated.")
flags.DEFINE_enum("split", "test", ["test", "validation"], "ensemble: score the "
                  "members on the test set or on their validation split.")
flags.DEFINE_string("out", None, "ensemble: also write the result to "
                    "OUT/ensemble.json.")


def _require(*names: str) -> None:
  for name in names:
    if FLAGS[name].value is None:
      raise UserError(f"--{name} is required for this command.")


def _start_jax() -> None:
  """XLA flags and multi-host set-up: both must precede JAX's first device use."""
  from mnist_jax.core import runtime
  runtime.set_gpu_determinism(FLAGS.deterministic)
  if FLAGS.multihost:
    runtime.init_multihost(FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id)


def cmd_train(args: List[str]) -> int:
  _require("config", "workdir")
  _start_jax()
  from mnist_jax.engine.loop import train_runs
  config = _CONFIG.value
  try:
    seeds = [int(seed) for seed in FLAGS.seeds] if FLAGS.seeds else [config.seed]
  except ValueError:
    raise UserError(f"--seeds {','.join(FLAGS.seeds)}: list whole numbers, "
                    "e.g. --seeds 0,1,2.") from None
  workdirs = ([os.path.join(FLAGS.workdir, f"seed{seed}") for seed in seeds]
              if FLAGS.seeds else [FLAGS.workdir])
  finals = train_runs(config, seeds, workdirs, mnist_dir=FLAGS.data_dir, force=FLAGS.force)
  for seed, workdir, final in zip(seeds, workdirs, finals):
    when = (f"of epoch {final['epoch']}, chosen by validation accuracy"
            if config.select == "best_val" else f"after {final['epoch']} epochs")
    who = f"seed {seed}: " if FLAGS.seeds else ""
    print(f"{who}final test accuracy {final['test_accuracy']:.4f} "
          f"(loss {final['test_loss']:.4f}) {when}; run saved in {workdir}")
  return 0


def cmd_evaluate(args: List[str]) -> int:
  _require("workdir")
  _start_jax()
  from mnist_jax.engine.restore import restore_and_evaluate
  result = restore_and_evaluate(FLAGS.workdir, mnist_dir=FLAGS.data_dir)
  print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f} "
        f"({result['count']} images)")
  return 0


def cmd_plot(args: List[str]) -> int:
  _require("workdir")
  if args:
    raise UserError(f"plot takes no file arguments (got {' '.join(args)}).")
  from mnist_jax.inference.plots import make_figures
  written, skipped = make_figures(FLAGS.workdir, FLAGS.format, FLAGS.digit,
                                  mnist_dir=FLAGS.data_dir)
  for name, reason in skipped.items():
    print(f"skipped {name}: {reason}")
  for path in written.values():
    print(f"wrote {path}")
  return 0


def cmd_predict(args: List[str]) -> int:
  _require("workdir")
  if not 1 <= FLAGS.top <= 10:
    raise UserError(f"--top {FLAGS.top}: use a number from 1 to 10.")
  if not args:
    raise UserError("predict needs image files or folders after the flags.")
  from mnist_jax.inference.predict import report_predictions
  return report_predictions(FLAGS.workdir, args, top=FLAGS.top, as_json=FLAGS.json,
                            figure=FLAGS.figure,
                            preprocess=not FLAGS["no-preprocess"].value)


def cmd_ensemble(args: List[str]) -> int:
  _require("workdirs")
  if args:
    raise UserError(f"ensemble takes no file arguments (got {' '.join(args)}): "
                    "list the runs in --workdirs.")
  _start_jax()
  from mnist_jax.inference.ensemble import report
  report(FLAGS.workdirs, FLAGS.split, FLAGS.out, mnist_dir=FLAGS.data_dir)
  return 0


COMMANDS: Dict[str, Tuple[Callable[[List[str]], int], str]] = {
    "train": (cmd_train, "train a config and evaluate it on the test set"),
    "evaluate": (cmd_evaluate, "restore a trained run and evaluate it"),
    "plot": (cmd_plot, "draw a trained run's figures into WORKDIR/figures/"),
    "predict": (cmd_predict, "recognise the digit in your own image files"),
    "ensemble": (cmd_ensemble, "combine trained runs by averaged probabilities "
                 "and by majority vote"),
}


def usage() -> str:
  lines = ["usage: python -m mnist_jax COMMAND [flags]", "", "commands:"]
  lines += [f"  {name:10s} {text}" for name, (_, text) in COMMANDS.items()]
  return "\n".join(lines)


def _one_line(error: Exception) -> str:
  """absl/config_flags messages can be multi-line reprs of a KeyError."""
  text = str(error)
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    text = text[1:-1]  # a repr'd string: drop its quotes and escapes
  text = text.replace("\\n", " ").replace("\\'", "'")
  return " ".join(text.split())


def main(argv: List[str]) -> int:
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(usage())
    return 0 if len(argv) >= 2 else 2
  command = argv[1]
  if command not in COMMANDS:
    raise UserError(f"unknown command {command!r}: use one of "
                    f"{', '.join(COMMANDS)}.")
  try:
    rest = FLAGS([argv[0]] + argv[2:])
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    # config_flags reports a misspelt --config.FIELD as one of these.
    raise UserError(f"bad flag: {_one_line(e)}") from None
  return COMMANDS[command][0](rest[1:])


def run() -> None:
  try:
    code = main(sys.argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    code = e.exit_code
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    code = 130
  sys.exit(code)
