r"""Throughput benchmark: `python -m mnist_jax benchmark [flags]`.

  python -m mnist_jax benchmark --configs configs/mlp.py,configs/cnn.py \
      --variants model.conv_impl=xla,im2col --out runs/benchmark.csv
  python -m mnist_jax benchmark --configs configs/cnn.py,configs/speedrun.py \
      --against torch              # needs the extra: pip install -e .[bench]

For each config (and each variant of one config field, for an A/B test; `--set
FIELD=VALUE` holds other fields fixed in every case):
training-step and evaluation images/s, compile time, model FLOPs per image,
achieved GFLOP/s and that as a fraction of an f32 matmul rate measured in the
same process on the same backend. All cases are compiled first, then timed in
interleaved rounds (A, B, A, B, ...) and the median round is reported, so a
noisy shared machine slows every variant alike. Warm-up calls are excluded and
every timing ends in `block_until_ready`, so it measures the device, on CPU,
GPU or TPU alike. Train steps are the training loop's own call (gathering
the batch from a training set on the device), evaluation the engine's one
evaluator. `--seeds N` also times that call vmapped over N seeds' stacked
states, as the loop trains a group of seeds, against N separate steps.
`--e2e_split` also runs `train_and_evaluate` for two epochs on that slice of
MNIST, to compare the second epoch's images/s with the pure step's.
`--against torch` also times each config's PyTorch twin (tools/against_torch.py:
same model, initial weights, batch, optimiser and schedule), NCHW and
channels_last, in the same interleaved rounds, and reports ours / PyTorch's
better format (`ours_vs_torch` > 1: ours is faster).
`--against_only` times the twins alone, and `--separate_processes N` times ours
and the twins in separate processes, one after the other, N times each
(tools/separate_processes.py): neither framework's threads share a process.
`--ledger` instead profiles each config's train call and attributes its
milliseconds to the compiled program's operations (tools/ledger.py).

FLOPs are counted analytically, per layer, from the shapes the model sees:
2 per multiply-add of each Conv and Dense layer (activations, pooling, the
loss and the optimiser are not counted); a training step counts 3x the
forward pass (backward = 2x forward: gradients of inputs and of weights).
"""

from __future__ import annotations

import copy
import csv
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.engine import evaluate as eval_lib, loop as loop_lib, mesh as mesh_lib
from mnist_jax.engine import state as state_lib, steps as steps_lib
from mnist_jax.engine.seed_stack import join_seeds
from mnist_jax.core.config import apply_overrides, has_field, load_config_file
from mnist_jax.core.errors import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import Conv

def forward_flops_per_image(model_config: ml_collections.ConfigDict) -> int:
  """2 x multiply-adds of every Conv and Dense layer for one 28x28x1 image."""
  model = build_model(model_config)
  x = jnp.zeros((1,) + data_lib.IMAGE_SHAPE, jnp.float32)
  flops = []

  def count(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if isinstance(module, (nn.Dense, Conv)) and context.method_name == "__call__":
      kernel = module.variables["params"]["kernel"]
      flops.append(2 * kernel.size * (out.size // out.shape[-1]))
    return out

  params = jax.eval_shape(model.init, jax.random.key(0), x)
  with nn.intercept_methods(count):
    jax.eval_shape(model.apply, params, x)
  return int(sum(flops))


def time_calls(fn: Callable[[], object], calls: int) -> float:
  """Seconds per call of `fn`, timed over `calls` calls, device work included."""
  start = time.perf_counter()
  out = None
  for _ in range(calls):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  """Median f32 rate of a jitted n x n matmul on the default backend."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  mm = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(mm(a, a))  # compile and warm up
  seconds = statistics.median(time_calls(lambda: mm(a, a), 1) for _ in range(repeats))
  return 2 * n ** 3 / seconds / 1e9


# The schedule's horizon for the timed states (the rate's value does not change
# a step's time); PyTorch's twin follows the same schedule.
STEPS_PER_EPOCH = 100


class TrainCall:
  """The training loop's train call (engine/steps.train_program, one step per
  call) on one fixed batch, which is the whole training set it gathers from:
  for one seed, or for `num_seeds` > 1 seeds' states stacked and the same
  call under jax.vmap, as engine/loop.py trains several seeds."""

  def __init__(self, config: ml_collections.ConfigDict, num_seeds: int, train_data, mesh):
    self.num_seeds, self.train_data = num_seeds, train_data
    keys = [state_lib.run_keys(seed) for seed in range(num_seeds)]
    states = [state_lib.create_train_state(config, k["init"], steps_per_epoch=STEPS_PER_EPOCH)
              for k in keys]
    self.state = mesh_lib.replicate(join_seeds(states), mesh)
    zeros = steps_lib.zero_sums(steps_lib.make_train_step(config), states[0],
                                config.batch_size, train_data)
    self.sums = mesh_lib.replicate(join_seeds([zeros] * num_seeds), mesh)
    self.keys = [join_seeds([k[name] for k in keys]) for name in ("dropout", "augment")]
    idx_B = np.arange(config.batch_size, dtype=np.int32)
    self.idx = mesh_lib.shard_indices(
        np.tile(idx_B, (num_seeds, 1)) if num_seeds > 1 else idx_B, mesh)
    program = steps_lib.train_program(config, num_seeds > 1, steps_per_call=1)
    start = time.perf_counter()
    self.step = program.lower(self.state, self.sums, train_data, self.idx,
                              *self.keys).compile()
    self.compile_s = time.perf_counter() - start
    self.train_s: List[float] = []

  def call(self):
    self.state, self.sums = self.step(self.state, self.sums, self.train_data, self.idx,
                                      *self.keys)
    return self.state.params, self.sums

  def run_round(self, steps: int) -> None:
    """Times `steps` calls, after one warm-up call."""
    jax.block_until_ready(self.call())
    self.train_s.append(time_calls(self.call, steps))


class Case:
  """One config compiled for timing: its train call, the evaluator, fixed batches."""

  def __init__(self, name: str, config: ml_collections.ConfigDict, mesh):
    self.name, self.config = name, config
    mesh_lib.check_batch_size(config.batch_size)
    mesh_lib.check_batch_size(config.eval_batch_size, "eval_batch_size")
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n,) + data_lib.IMAGE_SHAPE, np.uint8)
    labels = lambda n: (np.arange(n) % data_lib.NUM_CLASSES).astype(np.int32)
    b, e = config.batch_size, config.eval_batch_size
    self.train_data = mesh_lib.replicate({"image": images(b), "label": labels(b)}, mesh)
    self.eval_batch = mesh_lib.shard_batch(
        {"image": images(e), "label": labels(e), "mask": np.ones(e, np.float32)}, mesh)
    self.train = TrainCall(config, 1, self.train_data, mesh)
    self.eval_s: List[float] = []
    self.seeds = None  # a TrainCall over several seeds when --seeds is given
    self.torch = []  # PyTorch twins (NCHW, channels_last) when --against torch

  @property
  def compile_s(self) -> float:
    return self.train.compile_s

  def run_round(self, steps: int) -> None:
    """Times `steps` train steps and `steps // 4` eval batches, after one
    warm-up each (the evaluator's first call compiles it)."""
    self.train.run_round(steps)
    evaluate = lambda: eval_lib.batch_sums(self.train.state, self.eval_batch)
    jax.block_until_ready(evaluate())
    self.eval_s.append(time_calls(evaluate, max(1, steps // 4)))


def parse_variants(spec: str) -> List[Tuple[str, str]]:
  """'model.conv_impl=xla,im2col' -> [('model.conv_impl', 'xla'), (..., 'im2col')]."""
  if not spec:
    return [("", "")]
  if "=" not in spec:
    raise UserError(f"--variants {spec!r}: write FIELD=VALUE1,VALUE2 "
                    "(e.g. model.conv_impl=xla,im2col).")
  field, values = spec.split("=", 1)
  return [(field, v) for v in values.split(",")]


def parse_sets(texts: Sequence[str]) -> Dict[str, str]:
  """['augment.enabled=false', ...] -> {'augment.enabled': 'false', ...}."""
  pairs = [text.split("=", 1) for text in texts]
  for text, pair in zip(texts, pairs):
    if len(pair) != 2 or not pair[0]:
      raise UserError(f"--set {text!r}: write FIELD=VALUE (e.g. augment.enabled=false).")
  return dict(pairs)


def _check_some_config_has(flag: str, field: str, bases, config_paths) -> None:
  if not any(has_field(base, field) for _, base in bases):
    raise UserError(f"{flag} {field}: none of {', '.join(config_paths)} has that "
                    "field; check its spelling against the config files.")


def case_configs(config_paths: Sequence[str], variants: str,
                 sets: Sequence[str] = ()) -> List[Tuple[str, ml_collections.ConfigDict]]:
  """(label, config) per config and variant, after `sets` (FIELD=VALUE texts,
  the same in every case). A config without a set or varied field goes without
  it (e.g. conv_impl for the MLP), but the field must be in one of them."""
  bases = [(path, load_config_file(path)) for path in config_paths]
  for field, value in parse_sets(sets).items():
    _check_some_config_has("--set", field, bases, config_paths)
    for _, base in bases:
      if has_field(base, field):
        apply_overrides(base, {field: value})
  varied = parse_variants(variants)[0][0]
  if varied:
    _check_some_config_has("--variants", varied, bases, config_paths)
  configs = []  # all of them first: a bad value fails before any compiling
  for path, base in bases:
    name = os.path.splitext(os.path.basename(path))[0]
    chosen = parse_variants(variants)
    if varied and not has_field(base, varied):
      chosen = [("", "")]  # e.g. conv_impl for the MLP
    for field, value in chosen:
      label = f"{name} {field.split('.')[-1]}={value}" if field else name
      configs.append((label, with_override(base, field, value)))
  return configs


def build_cases(configs: Sequence[Tuple[str, ml_collections.ConfigDict]],
                mesh) -> List[Case]:
  """One compiled Case per (label, config) of `case_configs`."""
  return [Case(label, config, mesh) for label, config in configs]


def with_override(config: ml_collections.ConfigDict, field: str,
                  value: str) -> ml_collections.ConfigDict:
  """A copy of `config` with `field` (dotted; '' = none) set to the text `value`,
  typed like the field's default (config.apply_overrides)."""
  config = copy.deepcopy(config)
  if field:
    apply_overrides(config, {field: value})
  return config


def end_to_end_images_per_s(config: ml_collections.ConfigDict, split: str,
                            mnist_dir=None) -> float:
  """train_images_per_s of the second epoch of a two-epoch `train_and_evaluate` on
  `split` (metrics.jsonl): the first epoch also pays one-off costs (compiling
  the data order's permutation, warming caches)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.num_epochs = 2
  # The schedule's shape does not change the speed; a warm-up longer than these
  # two epochs would only make the config invalid.
  config.optimizer.warmup_epochs = min(config.optimizer.warmup_epochs, 1.0)
  config.data.train_split = split
  with tempfile.TemporaryDirectory() as workdir:
    loop_lib.train_and_evaluate(config, workdir, mnist_dir=mnist_dir, verbose=False)
    return run_dir.read_metrics(workdir)[-1]["train_images_per_s"]


def summarise(case: Case, matmul: float) -> Dict:
  """One row of the results table (with the vmapped seeds' columns, if timed)."""
  b, e = case.config.batch_size, case.config.eval_batch_size
  fwd = forward_flops_per_image(case.config.model)
  train_ips = b / statistics.median(case.train.train_s)
  gflops = 3 * fwd * train_ips / 1e9
  row = {"case": case.name, "batch": b, "compile_s": round(case.compile_s, 2),
          "train_img_s": round(train_ips), "eval_img_s": round(
              e / statistics.median(case.eval_s)),
          "fwd_mflop_img": round(fwd / 1e6, 3), "train_gflop_s": round(gflops, 1),
          "matmul_gflop_s": round(matmul, 1), "frac_matmul": round(gflops / matmul, 3)}
  seeds = case.seeds
  if seeds is not None:
    total = seeds.num_seeds * b / statistics.median(seeds.train_s)
    row.update({"seeds": seeds.num_seeds, "seeds_compile_s": round(seeds.compile_s, 2),
                "seeds_total_img_s": round(total),
                # > 1: one vmapped program beats training the seeds one by one.
                "seeds_vs_separate": round(total / train_ips, 3)})
  return row


def print_table(rows: List[Dict]) -> None:
  keys = list(rows[0])
  widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
  print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
  for r in rows:
    print("  ".join(str(r[k]).rjust(w) for k, w in zip(keys, widths)))


def write_csv(path: str, rows: List[Dict]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


AGAINST = ("", "torch")


def against_module(against: str):
  """The module that builds and times the other framework's twin (None for none)."""
  if against not in AGAINST:
    raise UserError(f"--against {against!r}: the only other framework is 'torch'.")
  if not against:
    return None
  try:
    from mnist_jax.tools import against_torch
  except ModuleNotFoundError as e:
    if e.name.split(".")[0] != "torch":
      raise
    raise UserError("--against torch needs PyTorch, an optional extra: "
                    "pip install -e .[bench]") from None
  return against_torch


def add_torch_cases(cases: List[Case], against_torch) -> None:
  """Each case's PyTorch twin, NCHW and channels_last, from our initial weights."""
  for case in cases:
    data = case.train_data
    case.torch = [against_torch.TorchCase(case.config, case.train.state, data["image"],
                                          data["label"], channels_last, STEPS_PER_EPOCH)
                  for channels_last in (False, True)]


def torch_columns(case: Case) -> Dict:
  """PyTorch's images/s in both formats and ours over the better one (> 1: ours
  faster; left out when ours was not timed)."""
  nchw, last = (case.config.batch_size / statistics.median(t.train_s) for t in case.torch)
  columns = {"torch_nchw_img_s": round(nchw), "torch_channels_last_img_s": round(last)}
  if case.train.train_s:
    ours = case.config.batch_size / statistics.median(case.train.train_s)
    columns["ours_vs_torch"] = round(ours / max(nchw, last), 3)
  return columns


def run(configs: Sequence[str], variants: str = "", rounds: int = 7,
        steps: int = 20, seeds: int = 0, e2e_split: str = "",
        out: str = "runs/benchmark.csv", against: str = "",
        against_only: bool = False, sets: Sequence[str] = ()) -> List[Dict]:
  """Times every case (module docstring), prints the table, writes `out` (CSV).
  `against_only`: time only the twins (ours is built for its initial weights)."""
  if against_only and (not against or seeds or e2e_split):
    raise UserError("--against_only times only the other framework's twin: give "
                    "--against torch, without --seeds or --e2e_split.")
  if seeds < 0 or seeds == 1:
    raise UserError(f"--seeds {seeds}: give 2 or more seeds to vmap (0 = off).")
  if rounds < 1 or steps < 1:
    raise UserError(f"--rounds {rounds} --steps {steps}: time at least 1 round of 1 step.")
  other = against_module(against)  # a missing PyTorch fails before any compiling
  labelled = case_configs(configs, variants, sets)
  print(mesh_lib.describe_devices())
  if other:
    for _, config in labelled:
      other.check_twin(config)
    other.torch.set_num_threads(other.torch_threads())
    print(f"torch {other.torch.__version__}, {other.torch.get_num_threads()} threads "
          "(torch.set_num_threads: as many as XLA:CPU's pool)")
  mesh = mesh_lib.make_mesh()
  cases = build_cases(labelled, mesh)
  for case in cases if seeds else []:
    case.seeds = TrainCall(case.config, seeds, case.train_data, mesh)
  if other:
    add_torch_cases(cases, other)
  matmul = []
  for _ in range(rounds):  # interleaved: every case sees the same load
    if not against_only:
      matmul.append(matmul_gflops(repeats=3))
    for case in cases:
      if not against_only:
        case.run_round(steps)
      if seeds:
        case.seeds.run_round(steps)
      for twin in case.torch:
        twin.run_round(steps)
  rows = [{"case": c.name, "batch": c.config.batch_size} if against_only
          else summarise(c, statistics.median(matmul)) for c in cases]
  for case, row in zip(cases, rows):
    if case.torch:
      row.update(torch_columns(case))
  if e2e_split:
    for case, row in zip(cases, rows):
      row["e2e_train_img_s"] = round(end_to_end_images_per_s(case.config, e2e_split))
      row["e2e_vs_step"] = round(row["e2e_train_img_s"] / row["train_img_s"], 3)
  print_table(rows)
  write_csv(out, rows)
  print(f"wrote {out}")
  return rows
