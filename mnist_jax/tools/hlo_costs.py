"""FLOPs, bytes and a kind for each operation of a compiled XLA program, read
from its HLO text (`compiled.as_text()`).

FLOPs: 2 per multiply-add of a dot or convolution, 1 per output element of an
elementwise arithmetic op, 1 per input element of a reduce, one per window
element of a reduce-window, and for a fusion the sum over the ops it fuses;
moving data (copy, transpose, broadcast, slice) counts none. Bytes: what an
operation reads and writes at its boundary, its operands plus its result (for
a fusion, not its fused intermediates, which stay in registers or cache).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Tuple

ELEMENTWISE = frozenset(
    "abs add and atan2 cbrt ceil clamp compare cosine divide erf exponential "
    "exponential-minus-one floor is-finite log log-plus-one logistic maximum minimum "
    "multiply negate not or power remainder round-nearest-afz round-nearest-even rsqrt "
    "select sign sine sqrt subtract tan tanh xor".split())
COPIES = frozenset({"copy", "transpose"})
# A fusion takes the kind of the first of these it contains, else of its
# elementwise ops, else of its copies; a lone op its own opcode.
HEAVY = ("convolution", "dot", "select-and-scatter", "reduce-window", "scatter",
         "gather", "sort", "reduce")
MOVES = ("dynamic-update-slice", "dynamic-slice", "slice", "concatenate", "pad",
         "broadcast", "iota", "reverse")


@dataclasses.dataclass
class HloOp:
  name: str
  opcode: str
  shape: str  # e.g. 'f32[128,10]{1,0}' or a tuple '(f32[2]{0}, s32[])'
  operands: List[str]
  attrs: str  # everything after the operand list: calls=, dim_labels=, metadata=
  computation: str


def _closing(text: str, start: int) -> int:
  """Index of the bracket closing the one at text[start]."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  depth = 0
  for i in range(start, len(text)):
    if text[i] in pairs:
      depth += 1
    elif text[i] in pairs.values():
      depth -= 1
      if depth == 0:
        return i
  raise ValueError(f"unbalanced HLO text: {text[start:start + 80]!r}")


def _parse_instruction(line: str, computation: str) -> HloOp:
  name, rest = line.strip().removeprefix("ROOT ").split(" = ", 1)
  end = _closing(rest, 0) + 1 if rest.startswith("(") else rest.index(" ")
  shape, rest = rest[:end], rest[end:].lstrip()
  opcode = rest[:rest.index("(")]
  close = _closing(rest, len(opcode))
  operands = re.findall(r"%([^\s,()]+)", rest[len(opcode):close])
  return HloOp(name.lstrip("%"), opcode, shape, operands, rest[close + 1:], computation)


def parse_module(text: str) -> Tuple[str, str, Dict[str, List[HloOp]]]:
  """(module name, entry computation's name, {computation name: its ops}) of
  an HLO module's text."""
  module = re.match(r"HloModule\s+([^\s,]+)", text).group(1)
  computations: Dict[str, List[HloOp]] = {}
  current = entry = None
  for line in text.splitlines():
    if line.endswith("{") and not line.startswith(" ") and "->" in line:
      current = line.removeprefix("ENTRY ").split(" ", 1)[0].lstrip("%")
      computations[current] = []
      entry = current if line.startswith("ENTRY ") else entry
    elif line.strip() == "}":
      current = None
    elif current is not None and " = " in line:
      computations[current].append(_parse_instruction(line, current))
  return module, entry, computations


def arrays(shape: str) -> List[Tuple[str, List[int]]]:
  """(dtype, dims) of every array in a shape, tuples flattened."""
  return [(dtype, [int(d) for d in dims.split(",") if d])
          for dtype, dims in re.findall(r"([a-z][a-z0-9]*)\[([0-9,]*)\]", shape)]


def shape_bytes(shape: str) -> int:
  total = 0
  for dtype, dims in arrays(shape):
    bits = int(re.search(r"\d+", dtype).group()) if dtype != "pred" else 8
    total += math.prod(dims) * bits // 8
  return total


def elements(shape: str) -> int:
  return sum(math.prod(dims) for _, dims in arrays(shape))


class Program:
  """The ops of one compiled program, by name, with their FLOPs, bytes and kind."""

  def __init__(self, hlo_text: str):
    self.module, self.entry, self.computations = parse_module(hlo_text)
    self.ops = {op.name: op for ops in self.computations.values() for op in ops}

  def _shape(self, op: HloOp, operand: int) -> str:
    return self.ops[op.operands[operand]].shape

  def _fused(self, op: HloOp) -> List[HloOp]:
    called = re.search(r"calls=%?([^\s,]+)", op.attrs)
    return self.computations[called.group(1)] if called else []

  def matmul_flops(self, op: HloOp) -> int:
    """2 per multiply-add of the dots and convolutions in `op` (fused ones too)."""
    if op.opcode == "dot":
      lhs = arrays(self._shape(op, 0))[0][1]
      dims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", op.attrs).group(1)
      depth = math.prod(lhs[int(d)] for d in dims.split(",") if d)
      return 2 * elements(op.shape) * depth
    if op.opcode == "convolution":
      rhs = arrays(self._shape(op, 1))[0][1]
      rhs_labels = re.search(r"dim_labels=[^_]+_([^-]+)->", op.attrs).group(1)
      # Each output element sums over the kernel's window and input features.
      return 2 * elements(op.shape) * math.prod(rhs) // rhs[rhs_labels.index("o")]
    return sum(self.matmul_flops(inner) for inner in self._fused(op))

  def flops(self, op: HloOp) -> int:
    """All FLOPs of `op` (module docstring)."""
    if op.opcode in ("dot", "convolution"):
      return self.matmul_flops(op)
    if op.opcode in ELEMENTWISE:
      return elements(op.shape)
    if op.opcode == "reduce":
      return elements(self._shape(op, 0))
    if op.opcode == "reduce-window":
      size = re.search(r"size=([0-9x]+)", op.attrs).group(1)
      return elements(op.shape) * math.prod(int(s) for s in size.split("x"))
    if op.opcode == "select-and-scatter":  # a compare per input, an add per source
      return elements(self._shape(op, 0)) + elements(self._shape(op, 1))
    return sum(self.flops(inner) for inner in self._fused(op))

  def bytes(self, op: HloOp) -> int:
    """Bytes read and written at the op's boundary: operands plus result."""
    return shape_bytes(op.shape) + sum(shape_bytes(self._shape(op, i))
                                       for i in range(len(op.operands)))

  def kind(self, op: HloOp) -> str:
    """The op's category: its heaviest fused op's, see HEAVY."""
    opcodes = {inner.opcode for inner in self._fused(op)} or {op.opcode}
    for heavy in HEAVY:
      if heavy in opcodes:
        return heavy
    if opcodes & ELEMENTWISE:
      return "elementwise"
    if opcodes & COPIES:
      return "copy/transpose"
    for move in MOVES:
      if move in opcodes:
        return "slice/pad/broadcast"
    return op.opcode

  def source(self, op: HloOp) -> str:
    """The JAX operation the op came from (its metadata op_name), if recorded."""
    found = re.search(r'op_name="([^"]*)"', op.attrs)
    return found.group(1) if found else ""
