#!/usr/bin/env bash
# Two JAX processes on this machine, two simulated CPU devices each (4 in all),
# train one small run together into one workdir, then train again on it (a
# resume of a finished run: nothing left to do). Checks the multi-host path
# (jax.distributed.initialize, per-process batch rows, cooperative orbax saves)
# without a cluster.
#
#   scripts/two_process_localhost.sh [WORKDIR]     (needs $MNIST_DIR or a prepared tfds copy)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
WORKDIR="${1:-runs/two_process_localhost}"
PORT="${PORT:-$((20000 + RANDOM % 20000))}"
export XLA_FLAGS="--xla_force_host_platform_device_count=2"
ARGS=(train --config configs/mlp.py --workdir "$WORKDIR" --multihost
      --coordinator_address "localhost:$PORT" --num_processes 2
      --config.num_epochs=2 --config.batch_size=64 --config.checkpoint.every_steps=10
      --config.data.train_split=train[:4000] --config.data.test_split=test[:2000])

run_both() {
  "$PY" -m mnist_jax "${ARGS[@]}" --process_id 1 > "$WORKDIR.p1.log" 2>&1 &
  local other=$!
  "$PY" -m mnist_jax "${ARGS[@]}" --process_id 0
  wait "$other" || { echo "process 1 failed:"; cat "$WORKDIR.p1.log"; exit 1; }
}

rm -rf "$WORKDIR" "$WORKDIR.p1.log"
mkdir -p "$(dirname "$WORKDIR")"
echo "== train (2 processes x 2 devices)"
run_both
echo "== checkpoints: $(ls "$WORKDIR/checkpoints" | sort -n | tr '\n' ' ')"
echo "== train again on the same workdir (resume)"
run_both
echo "== metrics.jsonl epochs: $(grep -o '"epoch": [0-9]*' "$WORKDIR/metrics.jsonl" | tr '\n' ' ')"
