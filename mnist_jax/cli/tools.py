"""The measuring commands: benchmark (mnist_jax.tools.benchmark) and speedrun
(mnist_jax.tools.speedrun)."""

from __future__ import annotations

from typing import List, Sequence

from absl import flags

from mnist_jax.cli.command import Command
from mnist_jax.cli.runs import parse_seeds

_DEFAULT_CONFIGS = ["configs/mlp.py", "configs/cnn.py", "configs/speedrun.py"]


def _define_benchmark(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  flags.DEFINE_list("configs", _DEFAULT_CONFIGS, "config files to time",
                    flag_values=fv)
  flags.DEFINE_string("variants", "", "FIELD=V1,V2: one case per value of one config "
                      "field (an A/B test), e.g. model.conv_impl=xla,im2col",
                      flag_values=fv)
  flags.DEFINE_multi_string("set", [], "FIELD=VALUE in every case (before --variants); "
                            "repeat it for several fields, e.g. --set augment.enabled=false",
                            flag_values=fv)
  flags.DEFINE_integer("rounds", 7, "timed rounds per case", flag_values=fv)
  flags.DEFINE_integer("steps", 20, "train steps per round", flag_values=fv)
  flags.DEFINE_integer("seeds", 0, "also time one train step vmapped over this many "
                       "seeds (0 = off)", flag_values=fv)
  flags.DEFINE_string("e2e_split", "", "also train two epochs on this MNIST slice "
                      "(e.g. 'train')", flag_values=fv)
  flags.DEFINE_string("out", "runs/benchmark.csv", "CSV file to write", flag_values=fv)
  flags.DEFINE_string("fixed_costs", "", "LABEL=CHECKOUT,...: instead, time the commands "
                      "a user types (train --config.num_epochs=1 of each of --configs, "
                      "evaluate, predict of one PNG) in fresh processes of each checkout, "
                      "interleaved, --rounds times (e.g. before=../main,after=. --rounds 2)",
                      flag_values=fv)
  flags.DEFINE_string("against", "", "'torch': also time each config's PyTorch twin "
                      "(NCHW and channels_last) in the same rounds; needs the extra "
                      "`pip install -e .[bench]`", flag_values=fv)
  flags.DEFINE_bool("against_only", False, "with --against: time only the twins (our "
                    "model is built for its initial weights, not timed)", flag_values=fv)
  flags.DEFINE_integer("separate_processes", 0, "with --against: instead, time ours and "
                       "the twins each in its own process, alternating, this many times "
                       "each; the medians and their ratio (tools/separate_processes.py)",
                       flag_values=fv)
  flags.DEFINE_bool("ledger", False, "instead, profile --steps train steps of each config "
                    "and attribute the step's time to the compiled program's operations, "
                    "with their FLOPs and bytes (tools/ledger.py)", flag_values=fv)
  flags.DEFINE_integer("top", 15, "--ledger: the slowest operations to list", flag_values=fv)
  flags.DEFINE_string("ledger_out", "", "--ledger: also write every operation's row to "
                      "this JSON file", flag_values=fv)


def benchmark(fv: flags.FlagValues, args: List[str]) -> int:
  if fv.ledger:
    from mnist_jax.tools import ledger
    ledger.run(fv.configs, fv.variants, steps=fv.steps, top=fv.top, out=fv.ledger_out,
               sets=fv.set,
               refused={"--against": fv.against, "--against_only": fv.against_only,
                        "--separate_processes": fv.separate_processes, "--seeds": fv.seeds,
                        "--e2e_split": fv.e2e_split, "--fixed_costs": fv.fixed_costs})
    return 0
  if fv.fixed_costs:
    from mnist_jax.tools import fixed_costs
    fixed_costs.run(fv.fixed_costs, fv.configs, rounds=fv.rounds, out=fv.out)
    return 0
  if fv.separate_processes:
    from mnist_jax.tools import separate_processes
    separate_processes.run(fv.configs, fv.variants, fv.against, fv.separate_processes,
                           rounds=fv.rounds, steps=fv.steps, out=fv.out, sets=fv.set)
    return 0
  from mnist_jax.tools import benchmark as benchmark_lib
  benchmark_lib.run(fv.configs, fv.variants, rounds=fv.rounds, steps=fv.steps,
                    seeds=fv.seeds, e2e_split=fv.e2e_split, out=fv.out,
                    against=fv.against, against_only=fv.against_only, sets=fv.set)
  return 0


def _define_speedrun(fv: flags.FlagValues, argv: Sequence[str]) -> None:
  flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "seeds, each trained by its own "
                    "`train` process", flag_values=fv)
  flags.DEFINE_string("out", "runs/speedrun", "OUT/seedS: the runs (started over); "
                      "OUT/speedrun.md and .json: the table", flag_values=fv)
  # Not --config: that name is the config_flags flag of train and the others.
  flags.DEFINE_string("config_file", "configs/speedrun.py", "config file", flag_values=fv)
  flags.DEFINE_multi_string("set", [], "FIELD=VALUE, passed to every train as "
                            "--config.FIELD=VALUE; repeat it for several fields, "
                            "e.g. --set num_epochs=1 --set batch_size=32", flag_values=fv)
  flags.DEFINE_bool("group", False, "also train the seeds as one vmapped program "
                    "(train --seeds) and compare its images/s", flag_values=fv)


def speedrun(fv: flags.FlagValues, args: List[str]) -> int:
  from mnist_jax.tools import speedrun as speedrun_lib
  speedrun_lib.run(parse_seeds(fv.seeds), fv.out, fv.config_file, fv.set, group=fv.group)
  return 0


COMMANDS = [
    Command("benchmark", "time training and evaluation steps of configs (images/s, "
            "GFLOP/s, compile time), interleaved so that load slows all alike",
            _define_benchmark, benchmark, usage="[flags]"),
    Command("speedrun", "train configs/speedrun.py once per seed, each its own "
            "process, and list each seed's accuracy, training and end-to-end time",
            _define_speedrun, speedrun, usage="[--seeds 0,1,2,3,4] [--out DIR] [--group]"),
]
