"""Where S >= 1 seeds trained together start: fresh, or from the checkpoints they share.

Each seed keeps its own run directory and its own checkpoints,
saved in rounds: every seed at the same step, a round started only once the
previous one is on disk (engine/loop.py). A SIGKILL during a round can leave
some seeds one save ahead of the others, so they resume from the newest
step every seed has, and the checkpoints past it (one at most per seed) are
deleted: the resumed seeds train them again, to the same bits. Anything
else (a seed two saves ahead, or a seed finished while another is not) means
the workdirs were not trained together, and is refused.
"""

from __future__ import annotations

import sys
from typing import List, Sequence

import numpy as np

from mnist_jax.core import run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.engine.seed_stack import SeedStack
from mnist_jax.engine.mesh import replicate, to_host


def _refuse_finished_beside_unfinished(workdirs: Sequence[str], num_epochs: int) -> None:
  finished = [run_dir.is_finished(w, num_epochs) for w in workdirs]
  if any(finished) and not all(finished):
    done, todo = workdirs[finished.index(True)], workdirs[finished.index(False)]
    raise UserError(f"{done!r} holds a finished run but {todo!r} does not: a group "
                    "resumes only runs it trained together; train the unfinished "
                    "seeds on their own, or the group in new workdirs.")


def align_checkpoints(mngrs: Sequence, workdirs: Sequence[str], num_epochs: int) -> None:
  """Makes each seed's newest checkpoint the newest step all seeds have (or
  none: a fresh start), deleting the one save a seed may be ahead by."""
  if len(mngrs) == 1:
    return
  steps = [set(m.all_steps()) for m in mngrs]
  if not any(steps):
    return
  _refuse_finished_beside_unfinished(workdirs, num_epochs)
  shared = set.intersection(*steps)
  newest = max(shared) if shared else 0
  ahead: List[List[int]] = [sorted(s for s in seed_steps if s > newest)
                            for seed_steps in steps]
  for workdir, extra in zip(workdirs, ahead):
    if len(extra) > 1:
      where = f"step {newest}" if shared else "a fresh start"
      raise UserError(f"the checkpoints of {workdir!r} go {len(extra)} saves past "
                      f"{where}, the newest all seeds share: these workdirs were not "
                      "trained together; resume each on its own, or train the group "
                      "in new workdirs.")
  for mngr, extra in zip(mngrs, ahead):
    for step in extra:
      mngr.delete(step)


def _drop_past_metrics(stack: SeedStack) -> None:
  """Deletes, saying so, the checkpoints past the epochs a seed's
  metrics.jsonl records (its last line cut by a crash or a full disk) when an
  older checkpoint lies within them: the run resumes from that one and trains
  the steps again, to the same bits. With none within, nothing is deleted
  (run_dir.keep_epochs then says what is missing)."""
  for workdir, mngr in zip(stack.workdirs, stack.mngrs):
    recorded = len(run_dir.read_metrics(workdir, notice=False))  # keep_epochs says it
    steps = sorted(mngr.all_steps())
    past = [s for s in steps if s // stack.steps > recorded]
    within = [s for s in steps if s // stack.steps <= recorded]
    if not (past and within):
      continue
    print(f"warning: {workdir}/{run_dir.METRICS_FILE} records {recorded} epoch(s) and "
          f"the checkpoints of steps {', '.join(map(str, past))} go past them: deleting "
          f"those (intact) checkpoints to resume from step {within[-1]}; the run trains "
          "their steps again, to the same result.", file=sys.stderr)
    for step in past:
      mngr.delete(step)


def _restore(stack: SeedStack, state, sums):
  """Each seed's newest checkpoint, as the loop holds them: (state, progress)
  with the seeds' states and sums stacked, or None for a fresh start."""
  restored = [checkpoint.restore(mngr, stack.part(state, i),
                                 stack.progress(i, 1, 0, stack.part(sums, i)))
              for i, mngr in enumerate(stack.mngrs)]
  if all(r is None for r in restored):
    return None
  for i, r in enumerate(restored):
    if r is None or not np.array_equal(to_host(r[1]["rng"]), to_host(stack.rng_data[i])):
      raise UserError(f"the checkpoints in {stack.workdirs[i]!r} come from another seed "
                      "than its config.json: use a new --workdir.")
  where = [(int(to_host(p["epoch"])), int(to_host(p["batch"]))) for _, p in restored]
  if len(set(where)) > 1:
    raise UserError(f"the seeds' checkpoints stand at different (epoch, batch) {where}: "
                    "train the group again in new workdirs.")
  if not stack.stacked:
    return restored[0]
  join = lambda trees: replicate(stack.join(to_host(trees)), stack.mesh)
  return (join([s for s, _ in restored]),
          dict(restored[0][1], sums=join([p["sums"] for _, p in restored])))


def start(stack: SeedStack, state, sums):
  """Resumes from the newest checkpoint if there is one: (state, sums, epoch, batch).

  Several seeds' checkpoints must have been aligned first (align_checkpoints).
  Drops metric lines past it (a kill after an epoch's lines, before its
  checkpoints were durable, redoes that epoch) and reads each seed's best
  validation accuracy so far (select='best_val').
  """
  _drop_past_metrics(stack)
  restored = _restore(stack, state, sums)
  epoch, batch = 1, 0
  if restored is not None:
    state, progress = restored
    sums = progress["sums"]
    epoch, batch = int(to_host(progress["epoch"])), int(to_host(progress["batch"]))
    stack.log(f"resuming from the checkpoint at step {(epoch - 1) * stack.steps + batch} "
              f"(epoch {epoch}, batch {batch})")
  for workdir in stack.workdirs if stack.writer else ():
    run_dir.keep_epochs(workdir, epoch - 1)
  for mngr in stack.best_mngrs:
    best = checkpoint.best_selection(mngr)
    stack.best_val.append(-1.0 if best is None else float(best["val_accuracy"]))
  return state, sums, epoch, batch
