#!/usr/bin/env bash
# Two JAX processes on this machine, two simulated CPU devices each (4 in all),
# train one small run together into one workdir, train again on it (a resume
# of a finished run: nothing left to do), then evaluate it together. Checks
# the multi-host path (jax.distributed.initialize, per-process batch rows,
# cooperative orbax saves, values gathered from both processes) without a
# cluster. Exits non-zero if any step fails in either process.
#
#   scripts/two_process_localhost.sh [WORKDIR]     (needs $MNIST_DIR or a prepared tfds copy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
WORKDIR="${1:-runs/two_process_localhost}"
PORT="${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}"
export XLA_FLAGS="--xla_force_host_platform_device_count=2"
MULTIHOST=(--multihost --coordinator_address "localhost:$PORT" --num_processes 2)
TRAIN=(train --config configs/mlp.py --workdir "$WORKDIR"
       --config.num_epochs=2 --config.batch_size=64 --config.checkpoint.every_steps=10
       --config.data.train_split=train[:4000] --config.data.test_split=test[:2000])

# Runs `python -m mnist_jax ARGS` as process 0 (output here) and process 1
# (output in WORKDIR.p1.log). The first to fail stops the other (which would
# otherwise wait for its peer until JAX's timeouts); fails if either fails.
run_both() {
  "$PY" -m mnist_jax "$@" "${MULTIHOST[@]}" --process_id 1 > "$WORKDIR.p1.log" 2>&1 &
  local p1=$! first=0 status0=0 status1=0
  "$PY" -m mnist_jax "$@" "${MULTIHOST[@]}" --process_id 0 &
  local p0=$!
  wait -n "$p0" "$p1" || { first=$?; kill "$p0" "$p1" 2>/dev/null || true; }
  wait "$p0" || status0=$?
  wait "$p1" || status1=$?
  if (( first || status0 || status1 )); then
    echo "== failed: exit status $status0 (process 0), $status1 (process 1; 143:" \
         "stopped after the other failed); process 1's output:"
    cat "$WORKDIR.p1.log"
    return 1
  fi
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # no process outlives the script

rm -rf "$WORKDIR" "$WORKDIR.p1.log"
mkdir -p "$(dirname "$WORKDIR")"
echo "== train (2 processes x 2 devices)"
run_both "${TRAIN[@]}"
echo "== checkpoints: $(ls "$WORKDIR/checkpoints" | sort -n | tr '\n' ' ')"
echo "== train again on the same workdir (resume)"
run_both "${TRAIN[@]}"
echo "== evaluate (2 processes x 2 devices)"
run_both evaluate --workdir "$WORKDIR"
echo "== metrics.jsonl epochs: $(grep -o '"epoch": [0-9]*' "$WORKDIR/metrics.jsonl" | tr '\n' ' ')"
