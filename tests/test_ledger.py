"""The ledger of a train step (tools/ledger.py) and the HLO costs it reads
(tools/hlo_costs.py)."""

import json

import jax
import jax.numpy as jnp
import pytest

from helpers import one_error_line
from mnist_jax import UserError
from mnist_jax.tools import benchmark, ledger
from mnist_jax.tools.hlo_costs import Program
from mnist_jax.tools.ledger import OpEvent


def compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile()


def entry_flops(program: Program, count) -> int:
  """`count` summed over the ops of the program's entry computation."""
  return sum(count(op) for op in program.computations[program.entry])


def test_attribute_shares_overlapping_time_by_hand():
  """Two threads overlapping for 5 us share those 5 us; a loop's body on the
  loop's own thread takes its time from the loop."""
  events = [OpEvent("a", 0, 10, thread=1, step="0"), OpEvent("b", 5, 15, thread=2, step="0"),
            OpEvent("loop", 20, 30, thread=1, step="1"),
            OpEvent("body", 22, 28, thread=1, step="1")]
  times = ledger.attribute(events)
  assert times == {"a": 7.5, "b": 7.5, "loop": 4.0, "body": 6.0}
  assert ledger.step_spans_us(events) == 15 + 10  # each step's first start to last end


def test_an_asynchronous_operation_lasts_until_its_end_event():
  """XLA:CPU's convolution event ends at its hand-off to the thread pool; its
  'end: NAME' event marks when it completes."""
  trace = lambda name, ts, dur: {"ph": "X", "name": name, "ts": ts, "dur": dur, "tid": 7,
                                 "args": {"hlo_op": name, "run_id": "1"}}
  ops = [trace("conv", 0, 1), trace("add", 2, 3), trace("conv", 20, 1)]
  ends = [{"ph": "X", "name": "end: conv", "ts": 10, "dur": 0.1},
          {"ph": "X", "name": "end: add", "ts": 4.9, "dur": 0.1},
          {"ph": "X", "name": "end: conv", "ts": 21, "dur": 0.1}]
  events = ledger.op_events(ops, ledger.completions(ops + ends))
  assert [(e.name, e.start, e.end) for e in events] == [
      ("conv", 0, 10), ("add", 2, 5), ("conv", 20, 21)]
  assert events[1].thread == 7 and events[0].thread != 7  # the conv has its own lane
  # 0-2: conv alone; 2-5 shared with add; 5-10 conv alone; 20-21 conv.
  assert ledger.attribute(events) == {"conv": 2 + 1.5 + 5 + 1, "add": 1.5}


def test_dot_and_convolution_flops_are_two_per_multiply_add():
  m, k, n = 24, 40, 8
  program = Program(compiled(lambda a, b: jnp.tanh(a @ b), jnp.ones((m, k)),
                             jnp.ones((k, n))).as_text())
  dots = [op for op in program.ops.values() if op.opcode == "dot"]
  assert [program.matmul_flops(op) for op in dots] == [2 * m * n * k]
  assert entry_flops(program, program.matmul_flops) == 2 * m * n * k
  # Batch 2, 6x6 map, 3 -> 5 channels, 3x3 kernel, SAME padding.
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  program = Program(compiled(conv, jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 5))).as_text())
  assert entry_flops(program, program.matmul_flops) == 2 * (2 * 6 * 6 * 5) * (3 * 3 * 3)


def test_ledger_rows_add_up_and_name_ops_of_the_program():
  m, k, n = 64, 256, 128
  a, b = jnp.ones((m, k)), jnp.ones((k, n))
  program = compiled(lambda a, b: jax.nn.relu(a @ b).sum(0), a, b)
  result = ledger.ledger(program, lambda: program(a, b), steps=3)
  summary, rows = result["summary"], result["ops"]
  assert summary["ops_ms"] == pytest.approx(sum(r["ms"] for r in rows))
  assert summary["ops_ms"] + summary["unattributed_ms"] == pytest.approx(summary["step_ms"])
  assert summary["gaps_in_program_ms"] >= -1e-9 and summary["ops_ms"] > 0
  hlo = Program(program.as_text())
  assert all(r["op"] in hlo.ops for r in rows)
  assert sum(r["matmul_flops"] for r in rows) == 2 * m * n * k
  assert [r["calls"] for r in rows] == [1.0] * len(rows)  # each op once per call
  kinds = {r["kind"] for r in rows}
  assert "dot" in kinds
  assert sum(kk["ms"] for kk in result["kinds"]) == pytest.approx(summary["ops_ms"])


@pytest.mark.slow
def test_ledger_of_the_mlp_train_step(tmp_path, monkeypatch):
  """The MLP's step: two dense layers forward, both kernels' gradients and
  one input gradient (the image's is not needed): 2 x B x (2 x 784 x 128 +
  3 x 128 x 10) FLOPs in dots."""
  cases = []
  monkeypatch.setattr(ledger, "Case",
                      lambda *args: cases.append(benchmark.Case(*args)) or cases[-1])
  out = tmp_path / "ledger.json"
  result, = ledger.run(["configs/mlp.py"], steps=2, top=3, out=str(out))
  hlo = Program(cases[0].train.step.as_text())
  assert all(r["op"] in hlo.ops for r in result["ops"])
  assert sum(r["matmul_flops"] for r in result["ops"]) == 2 * 128 * (
      2 * 784 * 128 + 3 * 128 * 10)
  written = json.loads(out.read_text())["ledgers"][0]
  assert written["config"] == "mlp" and len(written["ops"]) == len(result["ops"])
  assert written["summary"]["ops_ms"] == pytest.approx(sum(r["ms"] for r in written["ops"]))


def test_ledger_refuses_flags_it_does_not_combine_with(monkeypatch):
  monkeypatch.setattr(ledger, "Case", None)  # compiling would be a bug
  with pytest.raises(UserError, match="drop --seeds"):
    ledger.run(["configs/mlp.py"], refused={"--seeds": 2, "--against": ""})
  with pytest.raises(UserError, match="--steps 0"):
    ledger.run(["configs/mlp.py"], steps=0)


@pytest.mark.parametrize("extra", [["--seeds", "2"], ["--against", "torch"], ["--top", "0"],
                                   ["--steps", "0"]])
def test_benchmark_ledger_refuses_bad_flags_in_one_line(cli_here, tmp_path, extra):
  out = tmp_path / "ledger.json"
  one_error_line(cli_here("benchmark", "--ledger", "--configs", "configs/mlp.py",
                          "--ledger_out", out, *extra))
  assert not out.exists()
