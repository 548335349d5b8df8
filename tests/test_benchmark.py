"""The benchmark's FLOP count and one tiny end-to-end run of its table."""

import csv
import types

import jax
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.tools import benchmark

from configs import cnn as cnn_config, mlp as mlp_config


def test_forward_flops_are_two_per_multiply_add_of_each_layer():
  assert benchmark.forward_flops_per_image(mlp_config.get_config().model) == (
      2 * (784 * 128 + 128 * 10))
  cnn = 2 * (28 * 28 * 9 * 1 * 32 + 14 * 14 * 9 * 32 * 64 + 7 * 7 * 9 * 64 * 128
             + 3 * 3 * 128 * 128 + 128 * 10)
  assert benchmark.forward_flops_per_image(cnn_config.get_config().model) == cnn


def test_benchmark_writes_one_row_per_case(tmp_path):
  out = tmp_path / "bench.csv"
  rows = benchmark.run(["configs/mlp.py"], rounds=1, steps=1, out=str(out))
  assert [r["case"] for r in rows] == ["mlp"]
  assert rows[0]["train_img_s"] > 0 and 0 < rows[0]["frac_matmul"]
  written = list(csv.DictReader(open(out)))
  assert written[0]["case"] == "mlp" and float(written[0]["train_gflop_s"]) > 0


def test_benchmark_times_seeds_vmapped_against_one_seed(tmp_path, monkeypatch):
  """--seeds 2 times one program over both seeds' stacked states: one call
  per step, as many calls as the single seed's, not one per seed."""
  programs = []  # per train program: [stacked?, (its params, its indices' shape), calls]
  build = benchmark.steps_lib.train_program

  def spy_program(config, stacked=False, steps_per_call=None):
    program, record = build(config, stacked, steps_per_call), [stacked, None, 0]
    programs.append(record)

    def lower(state, sums, train_data, idx, *keys):
      record[1] = (jax.tree.map(np.asarray, state.params), idx.shape)  # before donation
      args = (state, sums, train_data, idx, *keys)
      compiled = program.lower(*args).compile()

      def call(*call_args):
        record[2] += 1
        return compiled(*call_args)
      return types.SimpleNamespace(compile=lambda: call)
    return types.SimpleNamespace(lower=lower)

  monkeypatch.setattr(benchmark.steps_lib, "train_program", spy_program)
  rows = benchmark.run(["configs/mlp.py"], rounds=1, steps=3, seeds=2,
                       out=str(tmp_path / "bench.csv"))
  assert rows[0]["seeds"] == 2 and rows[0]["seeds_total_img_s"] > 0
  assert rows[0]["seeds_vs_separate"] > 0  # its arithmetic: the test below
  (single, (one_params, one_idx), one_calls), (stacked, (params, idx), calls) = programs
  assert (single, stacked) == (False, True) and calls == one_calls == 1 + 3
  assert idx == (2,) + one_idx
  kernels = params["Dense_0"]["kernel"]
  assert kernels.shape == (2,) + one_params["Dense_0"]["kernel"].shape
  assert not np.array_equal(kernels[0], kernels[1])  # two seeds, not one copied


def test_summary_row_on_made_up_timings_by_hand():
  """Images/s = batch / the median seconds per step; training FLOPs = 3 x the
  forward's; S seeds together = S x batch / their median step, against one
  seed's rate."""
  seeds = types.SimpleNamespace(num_seeds=2, compile_s=0.5, train_s=[0.04, 0.032, 0.03])
  case = types.SimpleNamespace(name="mlp", config=mlp_config.get_config(),
                               compile_s=1.234,
                               train=types.SimpleNamespace(train_s=[0.01, 0.02, 0.04]),
                               eval_s=[0.1, 0.25, 0.5], seeds=seeds)
  assert benchmark.summarise(case, matmul=100.0) == {
      "case": "mlp", "batch": 128, "compile_s": 1.23,
      "train_img_s": 6400, "eval_img_s": 4000,  # 128 / 0.02 s, 1000 / 0.25 s
      "fwd_mflop_img": 0.203,  # 2 x (784 x 128 + 128 x 10) = 203,264 FLOPs
      "train_gflop_s": 3.9, "matmul_gflop_s": 100.0,  # 3 x 203,264 x 6,400 = 3.90e9
      "frac_matmul": 0.039,
      "seeds": 2, "seeds_compile_s": 0.5,
      "seeds_total_img_s": 8000, "seeds_vs_separate": 1.25}  # 2 x 128 / 0.032 s; / 6,400


def test_benchmark_refuses_bad_input_before_any_work(tmp_path, monkeypatch):
  monkeypatch.setattr(benchmark, "build_cases", None)  # compiling would be a bug
  with pytest.raises(UserError, match="--seeds 1: give 2 or more"):
    benchmark.run(["configs/mlp.py"], seeds=1, out=str(tmp_path / "bench.csv"))
  with pytest.raises(UserError, match="write FIELD=VALUE1,VALUE2"):
    benchmark.run(["configs/mlp.py"], variants="model.conv_impl", out=str(tmp_path / "b"))
  assert not (tmp_path / "bench.csv").exists()


@pytest.mark.slow  # times every piece of the default CNN's convolutions
def test_op_benchmark_times_every_conv_piece_and_pooling_variant():
  from mnist_jax.tools import benchmark_ops
  rows = benchmark_ops.main(["--batch", "8", "--repeats", "1"])
  ops = [r["op"] for r in rows]
  assert sum("kernel_grad xla_chunked" in op for op in ops) == 3  # one per stage
  assert "conv1 14x14x32->64 forward" in ops
  # 28x28 and 14x14 maps are pooled 2x2; the 7x7 one is not timed (odd size).
  assert sum("strided views" in op for op in ops) == 2
  assert sum("shares interleaved" in op for op in ops) == 2
  assert all(r["ms"] > 0 for r in rows)


def test_set_fields_hold_in_every_case_beside_the_variants():
  cases = benchmark.case_configs(["configs/cnn.py", "configs/mlp.py"],
                                 "model.conv_impl=xla,taps",
                                 ["augment.enabled=false", "model.dropout_rate=0.5"])
  assert [label for label, _ in cases] == [
      "cnn conv_impl=xla", "cnn conv_impl=taps", "mlp"]
  assert [c.model.get("conv_impl") for _, c in cases] == ["xla", "taps", None]
  assert all(c.augment.enabled is False and c.model.dropout_rate == 0.5 for _, c in cases)
  plain = dict(benchmark.case_configs(["configs/cnn.py"], ""))
  assert plain["cnn"].augment.enabled is True  # the file itself is left alone
  with pytest.raises(UserError, match="--set augment.enable: none of configs/cnn.py"):
    benchmark.case_configs(["configs/cnn.py"], "", ["augment.enable=false"])
  with pytest.raises(UserError, match="--set 'augment.enabled': write FIELD=VALUE"):
    benchmark.case_configs(["configs/cnn.py"], "", ["augment.enabled"])


def test_variant_values_take_the_type_of_the_config_default():
  base = cnn_config.get_config()
  assert benchmark.with_override(base, "augment.enabled", "False").augment.enabled is False
  assert benchmark.with_override(base, "batch_size", "64").batch_size == 64
  assert benchmark.with_override(base, "model.conv_impl", "xla").model.conv_impl == "xla"
  assert benchmark.with_override(base, "model.kernel_sizes", "(5, 5, 5)"
                                 ).model.kernel_sizes == (5, 5, 5)
  assert base.batch_size == 128 and base.augment.enabled is True  # a copy is changed
  with pytest.raises(UserError, match="augment.enabled = 'yes': it is not true or false"):
    benchmark.with_override(base, "augment.enabled", "yes")
  with pytest.raises(UserError, match="batch_size = 'big': it is not a valid int"):
    benchmark.with_override(base, "batch_size", "big")
  with pytest.raises(UserError, match="model.kernel_size: the config has no such field"):
    benchmark.with_override(base, "model.kernel_size", "3")


def test_fixed_costs_split_a_train_by_hand(tmp_path):
  """fixed = wall - the compile seconds `train` printed - the epochs' seconds."""
  from mnist_jax.tools import fixed_costs
  from mnist_jax.core import run_dir
  for epoch, seconds in ((1, 1.5), (2, 2.0)):  # complete epoch lines, as train writes them
    line = dict.fromkeys(run_dir.METRIC_KEYS, 0.5)
    line.update(epoch=epoch, step=10 * epoch, test_count=100, epoch_time_s=seconds)
    run_dir.append_metrics(str(tmp_path), line)
  split = fixed_costs.split_train_time("Train and eval steps compiled in 0.7s\n",
                                       str(tmp_path), wall=6.0)
  assert split == {"compile_s": 0.7, "epochs_s": 3.5, "fixed_s": pytest.approx(1.8)}


@pytest.mark.parametrize("text", ["", "before", "a=", "x=/nonexistent"])
def test_fixed_costs_refuse_bad_checkouts_in_one_line(text):
  from mnist_jax.tools import fixed_costs
  with pytest.raises(UserError, match="--fixed_costs"):
    fixed_costs.parse_checkouts(text)
