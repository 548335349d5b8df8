#!/usr/bin/env bash
# The measurements to take whenever a GPU is at hand, in one go:
#   scripts/gpu_check.sh OUTDIR
# 1. the benchmark harness (with --against torch when PyTorch is importable and
#    the harness has that flag), 2. the speedrun's 5 seeds end to end (and the
#    same seeds as one vmapped program), 3. one quick study (kernel_size).
# Writes OUTDIR/summary.md: the device (jax.devices()), each part's exit status
# and wall time, and its numbers. Runs unchanged on a CPU. GPU_CHECK_TINY=1 is
# a tiny form (few steps, 1 seed on 1,000 images; the study's 3x3 point alone,
# 1 seed) for tests/test_gpu_check.py.
# A failing part is recorded in the summary and the others still run; the exit
# status is then 1. Set PYTHON to choose the interpreter (default: python).
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: scripts/gpu_check.sh OUTDIR  (GPU_CHECK_TINY=1 for the tiny form)" >&2
  exit 2
fi
PY=${PYTHON:-python}
mkdir -p "$1" || { echo "error: cannot create $1" >&2; exit 2; }
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
  BENCH=(--configs configs/mlp.py --rounds 1 --steps 1)
  SPEED=(--seeds 0 --set num_epochs=1 --set "data.train_split=train[:1000]"
         --set "data.test_split=test[:500]")
  # The quick study's runner and report on its 3x3 point and seed 0 only.
  STUDY=("$PY" -c 'import dataclasses, sys
from mnist_jax.cli.experiments import load_experiment
from mnist_jax.studies import script, spec
kernel_size = load_experiment("kernel_size")
study = dataclasses.replace(kernel_size.STUDY, points=[
    p for p in kernel_size.STUDY.points if p.name == "cnn_k3"])
preset = dataclasses.replace(spec.quick(kernel_size.PRESETS["cpu"]), seeds=(0,))
script.run(study, {"cpu": preset}, kernel_size.report, out=sys.argv[1])')
else
  BENCH=(--configs configs/mlp.py,configs/cnn.py,configs/speedrun.py --rounds 5
         --steps 20 --seeds 4)
  SPEED=(--seeds 0,1,2,3,4 --group)
  STUDY=("$PY" -m mnist_jax study kernel_size --quick --out)
fi
# The help text is read whole first: `grep -q` on a pipe may end it early and,
# under pipefail, fail the test though the flag is there.
BENCH_HELP=$("$PY" -m mnist_jax benchmark -h 2>/dev/null)
if "$PY" -c 'import torch' 2>/dev/null && grep -q -- '--against' <<< "$BENCH_HELP"; then
  BENCH+=(--against torch)
fi

STATUS="$OUT/parts.tsv"  # name, exit status, seconds
: > "$STATUS"
part() {  # part NAME COMMAND...: runs it, output to OUT/NAME.log
  local name=$1 start rc
  shift
  echo "== $name: $*"
  start=$(date +%s%N)
  "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local tenths=$(( ($(date +%s%N) - start) / 100000000 ))
  printf '%s\t%s\t%d.%d\n' "$name" "$rc" $((tenths / 10)) $((tenths % 10)) >> "$STATUS"
  tail -n 3 "$OUT/$name.log"
}

part benchmark "$PY" -m mnist_jax benchmark "${BENCH[@]}" --out "$OUT/benchmark.csv"
part speedrun "$PY" -m mnist_jax speedrun "${SPEED[@]}" --out "$OUT/speedrun"
part study "${STUDY[@]}" "$OUT/study"

"$PY" - "$OUT" <<'EOF'
import csv, glob, os, sys, time
out = sys.argv[1]
import jax
devices = jax.devices()
lines = [f"# GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
         f"Device: {devices[0].device_kind} ({len(devices)} x {devices[0].platform}); "
         f"jax {jax.__version__}; tiny form: {os.environ.get('GPU_CHECK_TINY', '0') == '1'}.",
         "", "| part | exit status | wall time (s) |", "|---|---|---|"]
parts = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "parts.tsv"))]
lines += [f"| {name} | {rc} | {secs} |" for name, rc, secs in parts]
lines.append(f"| all | {max(int(rc) for _, rc, _ in parts)} | "
             f"{sum(float(s) for _, _, s in parts):.1f} |")
bench = os.path.join(out, "benchmark.csv")
if os.path.exists(bench):
  rows = list(csv.DictReader(open(bench)))
  lines += ["", "## Benchmark (`python -m mnist_jax benchmark`)", "",
            "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
  lines += ["| " + " | ".join(r.values()) + " |" for r in rows]
speed = os.path.join(out, "speedrun", "speedrun.md")
if os.path.exists(speed):
  lines += ["", "## Speedrun end to end", "", open(speed).read().rstrip()]
tables = sorted(glob.glob(os.path.join(out, "study", "tables", "*.md")))
if tables:
  lines += ["", "## Study kernel_size (--quick)"]
  lines += ["", *(open(t).read().rstrip() for t in tables)]
with open(os.path.join(out, "summary.md"), "w") as f:
  f.write("\n".join(lines) + "\n")
print(f"wrote {os.path.join(out, 'summary.md')}")
EOF
summary_rc=$?
failed=$(awk -F'\t' '$2 != 0' "$STATUS" | wc -l)
[ "$summary_rc" -eq 0 ] && [ "$failed" -eq 0 ]
