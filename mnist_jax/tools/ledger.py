r"""A ledger of the training step: `python -m mnist_jax benchmark --ledger`.

  python -m mnist_jax benchmark --ledger --configs configs/cnn.py \
      [--steps 20] [--top 15] [--ledger_out runs/ledger.json]

Profiles the compiled train step of each config (the training loop's own
program, engine/steps.train_program, one step per call, as `benchmark` times
it) over --steps calls under `jax.profiler.trace`, and attributes the step's
milliseconds to the operations and fusions of the compiled program: XLA:CPU
records one trace event per operation it runs (its `hlo_op`), and for one it
runs asynchronously (its convolutions, on the thread pool) an 'end:' event
when it completes. Where operations overlap in time (side by side on several
threads, asynchronous ones, or a loop around its body), each instant is
shared equally among the innermost ones running then, so the rows add up to
the time the program was busy.

Printed, per config (markdown tables):
- the step time measured by the wall clock over the traced calls, the sum of
  the rows, and the remainder the rows do not explain, split into the gaps
  between operations inside the program and the time outside it (the host's
  work between steps); also the step time without the profiler, whose own
  cost is the difference;
- the rows grouped by kind (convolution, dot, elementwise, reduce-window,
  select-and-scatter, copy/transpose, ...: tools/hlo_costs.py);
- the --top operations by time, each with its kind, share of the step, calls
  per step, FLOPs and bytes per step (read from the HLO, tools/hlo_costs.py),
  the GFLOP/s and GB/s those reach, and the JAX operation it came from.
--ledger_out writes all of it, every operation, as JSON.
"""

from __future__ import annotations

import bisect
import dataclasses
import glob
import gzip
import json
import os
import re
import tempfile
from collections import defaultdict
from typing import Callable, Dict, List, Sequence

import jax

from mnist_jax.core.errors import UserError
from mnist_jax.engine import mesh as mesh_lib
from mnist_jax.tools.benchmark import Case, case_configs, time_calls
from mnist_jax.tools.hlo_costs import Program


@dataclasses.dataclass
class OpEvent:
  """One execution of one operation of the program, microseconds."""
  name: str
  start: float
  end: float
  thread: object  # the thread it ran on, or a lane of its own if asynchronous
  step: str  # the trace's run_id: one per call of the program


def trace_events(call: Callable[[], object], steps: int, module: str):
  """Runs `call` `steps` times under the profiler. Returns (the module's
  OpEvents on its first device, wall seconds of the calls)."""
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0  # Python frames would only add events
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True,
                            profiler_options=options):
      wall = time_calls(call, steps)
    path, = glob.glob(os.path.join(log_dir, "**", "perfetto_trace.json.gz"),
                      recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
         and e["args"].get("hlo_module") == module]
  first_device = min((e["args"].get("device_ordinal", "0") for e in ops), default="0")
  ops = [e for e in ops if e["args"].get("device_ordinal", "0") == first_device]
  return op_events(ops, completions(events)), wall


def completions(events) -> Dict[str, List[float]]:
  """Per operation name, the sorted times of its 'end: NAME' events."""
  ends = defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and e.get("name", "").startswith("end: "):
      ends[e["name"][len("end: "):]].append(e["ts"])
  return {name: sorted(times) for name, times in ends.items()}


def op_events(ops, ends: Dict[str, List[float]]) -> List[OpEvent]:
  """OpEvents of trace events, each ending at its completion. XLA:CPU runs
  some operations (its convolutions) asynchronously: their trace event ends
  when the work is handed to the thread pool, and the 'end: NAME' event
  records when it completes; such an operation gets a lane of its own."""
  out = []
  for i, e in enumerate(sorted(ops, key=lambda e: e["ts"])):
    name, start, end = e["args"]["hlo_op"], e["ts"], e["ts"] + e["dur"]
    later = ends.get(name, [])
    k = bisect.bisect_left(later, start)
    done = later.pop(k) if k < len(later) else end  # each end closes one execution
    out.append(OpEvent(name, start, max(end, done), ("async", i) if done > end else e["tid"],
                       e["args"].get("run_id", "")))
  return out


def attribute(events: Sequence[OpEvent]) -> Dict[str, float]:
  """Microseconds per operation name: each instant shared equally among the
  events running then, on each thread only its innermost (the latest started)."""
  times: Dict[str, float] = defaultdict(float)
  bounds = sorted({t for e in events for t in (e.start, e.end)})
  by_start = sorted(events, key=lambda e: e.start)
  running, next_event = [], 0
  for a, b in zip(bounds, bounds[1:]):
    while next_event < len(by_start) and by_start[next_event].start <= a:
      running.append(by_start[next_event])
      next_event += 1
    running = [e for e in running if e.end > a]
    innermost = {}
    for e in running:  # in start order: a later start on a thread is nested
      innermost[e.thread] = e
    for e in innermost.values():
      times[e.name] += (b - a) / len(innermost)
  return times


def step_spans_us(events: Sequence[OpEvent]) -> float:
  """Sum over steps of each step's first operation's start to its last's end."""
  spans = defaultdict(list)
  for e in events:
    spans[e.step].append(e)
  return sum(max(e.end for e in s) - min(e.start for e in s) for s in spans.values())


def op_costs(program: Program, name: str) -> Dict:
  """An operation's kind, FLOPs and bytes per call, and its JAX source."""
  op = program.ops.get(name)
  if op is None:
    return {"kind": "not in the HLO", "flops": 0, "matmul_flops": 0, "bytes": 0,
            "source": ""}
  return {"kind": program.kind(op), "flops": program.flops(op),
          "matmul_flops": program.matmul_flops(op), "bytes": program.bytes(op),
          "source": program.source(op)}


def with_rates(row: Dict, step_ms: float) -> Dict:
  """`row` with its share of the step, GFLOP/s and GB/s."""
  ms = row["ms"]
  return {**row, "share": ms / step_ms, "gflop_s": row["flops"] / ms / 1e6 if ms else 0.0,
          "gb_s": row["bytes"] / ms / 1e6 if ms else 0.0}


def op_rows(program: Program, times_us: Dict[str, float], events: Sequence[OpEvent],
            steps: int, step_ms: float) -> List[Dict]:
  """One row per operation, per step, slowest first."""
  calls = defaultdict(int)
  for e in events:
    calls[e.name] += 1
  rows = []
  for name, us in sorted(times_us.items(), key=lambda item: -item[1]):
    per_step, costs = calls[name] / steps, op_costs(program, name)
    for key in ("flops", "matmul_flops", "bytes"):
      costs[key] *= per_step
    rows.append(with_rates({"op": name, "ms": us / 1e3 / steps, "calls": per_step,
                            **costs}, step_ms))
  return rows


def kind_rows(rows: Sequence[Dict], step_ms: float) -> List[Dict]:
  """The rows summed by kind, slowest kind first."""
  kinds: Dict[str, Dict] = {}
  for r in rows:
    k = kinds.setdefault(r["kind"], {"kind": r["kind"], "ops": 0, "ms": 0.0,
                                     "flops": 0, "bytes": 0})
    k["ops"] += 1
    for key in ("ms", "flops", "bytes"):
      k[key] += r[key]
  return [with_rates(k, step_ms) for k in sorted(kinds.values(), key=lambda k: -k["ms"])]


def ledger(compiled, call: Callable[[], object], steps: int) -> Dict:
  """The ledger of `compiled` (a jax AOT-compiled program) run by `call`:
  summary, kinds and every op's row (module docstring)."""
  program = Program(compiled.as_text())
  jax.block_until_ready(call())  # warm up
  untraced_s = time_calls(call, steps)
  events, wall_s = trace_events(call, steps, program.module)
  if not events:
    raise UserError(f"the profiler recorded no operation of {program.module} on "
                    f"{jax.default_backend()}: --ledger needs XLA's per-operation trace "
                    "events, which XLA:CPU records; run it on the CPU.")
  times_us = attribute(events)
  step_ms = 1e3 * wall_s
  rows = op_rows(program, times_us, events, steps, step_ms)
  ops_ms = sum(r["ms"] for r in rows)
  in_program_ms = step_spans_us(events) / 1e3 / steps
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  summary = {"steps": steps, "step_ms": step_ms, "step_ms_unprofiled": 1e3 * untraced_s,
             "ops_ms": ops_ms, "unattributed_ms": step_ms - ops_ms,
             "gaps_in_program_ms": in_program_ms - ops_ms,
             "outside_program_ms": step_ms - in_program_ms,
             "flops": sum(r["flops"] for r in rows),
             "xla_cost_analysis_flops": cost.get("flops", 0.0),
             "bytes": sum(r["bytes"] for r in rows)}
  return {"summary": summary, "kinds": kind_rows(rows, step_ms), "ops": rows}


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
  return str(value)


def markdown(rows: Sequence[Dict], columns: Dict[str, Callable[[Dict], object]]) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(f(r)) for f in columns.values()) + " |" for r in rows]
  return "\n".join(lines)


def short_source(op_name: str, width: int = 64) -> str:
  """The op's JAX source without the program's name, its end kept if long."""
  op_name = re.sub(r"^jit\([^)]*\)/", "", op_name)
  return op_name if len(op_name) <= width else "..." + op_name[3 - width:]


KIND_COLUMNS = {
    "kind": lambda r: r["kind"], "ops": lambda r: r["ops"], "ms": lambda r: r["ms"],
    "share": lambda r: f"{100 * r['share']:.1f}%", "MFLOP": lambda r: r["flops"] / 1e6,
    "GFLOP/s": lambda r: r["gflop_s"], "MB": lambda r: r["bytes"] / 1e6,
    "GB/s": lambda r: r["gb_s"]}
OP_COLUMNS = {
    "op": lambda r: r["op"], **{k: f for k, f in KIND_COLUMNS.items() if k != "ops"},
    "calls": lambda r: r["calls"], "from": lambda r: short_source(r["source"])}


def report(label: str, result: Dict, top: int) -> str:
  s = result["summary"]
  lines = [
      f"## Ledger of the train step: {label} ({s['steps']} steps profiled)", "",
      f"measured step time: {s['step_ms']:.3f} ms under the profiler "
      f"({s['step_ms_unprofiled']:.3f} ms without it)",
      f"sum of the rows (operations of the program): {s['ops_ms']:.3f} ms "
      f"({100 * s['ops_ms'] / s['step_ms']:.1f}% of the step)",
      f"unattributed: {s['unattributed_ms']:.3f} ms = {s['gaps_in_program_ms']:.3f} ms "
      f"between operations inside the program + {s['outside_program_ms']:.3f} ms "
      "outside it (the host between steps)",
      f"FLOPs per step: {s['flops'] / 1e9:.3f} G counted from the HLO "
      f"({s['xla_cost_analysis_flops'] / 1e9:.3f} G by XLA's cost analysis)", "",
      "### By kind", "", markdown(result["kinds"], KIND_COLUMNS), "",
      f"### Top {min(top, len(result['ops']))} of {len(result['ops'])} operations",
      "", markdown(result["ops"][:top], OP_COLUMNS)]
  return "\n".join(lines)


def check_flags(steps: int, top: int, refused: Dict[str, object]) -> None:
  """Bad flags fail in one line before any compiling."""
  if steps < 1 or top < 1:
    raise UserError(f"--steps {steps} --top {top}: profile at least 1 step and list "
                    "at least 1 operation.")
  given = [flag for flag, value in refused.items() if value]
  if given:
    raise UserError(f"--ledger profiles each config's train step alone; drop "
                    f"{', '.join(given)} (run those as a separate benchmark).")


def run(configs: Sequence[str], variants: str = "", steps: int = 20, top: int = 15,
        out: str = "", refused: Dict[str, object] = None,
        sets: Sequence[str] = ()) -> List[Dict]:
  """The ledger of each config's (and variant's) train step, printed; JSON to `out`.
  `refused`: benchmark flags given with --ledger, which it does not combine with."""
  check_flags(steps, top, refused or {})
  labelled = case_configs(configs, variants, sets)
  print(mesh_lib.describe_devices())
  mesh = mesh_lib.make_mesh()
  results = []
  for label, config in labelled:
    case = Case(label, config, mesh)
    result = {"config": label, **ledger(case.train.step, case.train.call, steps)}
    print(report(label, result, top) + "\n")
    results.append(result)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump({"devices": mesh_lib.describe_devices(), "ledgers": results}, f, indent=1)
    print(f"wrote {out}")
  return results
