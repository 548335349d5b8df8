"""Ensembles of K trained runs: averaged probabilities and majority vote.

  python -m mnist_jax ensemble --workdirs runs/a,runs/b,runs/c [--split test]
      [--out results/abc]

Each member is a run directory restored from its selected checkpoint: the
last, or for runs with config.select = 'best_val' the best validation epoch's
(never one picked by its test score). Two ways to combine them:

- average: the class with the highest mean softmax probability over members;
- vote: the class most members predict (a plurality: with K = 3 and three
  different answers each has one vote); a tie between classes is broken by
  the averaged probabilities of the tied classes.

`--split validation` scores the members on the validation images carved from
the end of their training split (`config.data.validation_size`), the split to
use for any choice of members; `test` is for the number reported.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import ml_collections
import numpy as np

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.inference import trained

SPLITS = ("test", "validation")
RESULT_FILE = "ensemble.json"


def average_predictions(probs_KxNxC: np.ndarray) -> np.ndarray:
  """argmax of the members' mean probabilities, N labels."""
  return np.argmax(probs_KxNxC.mean(axis=0), axis=-1)


def majority_vote(probs_KxNxC: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(N labels, N bools): the most voted class, and where the vote was tied.

  Ties go to the tied class with the highest mean probability.
  """
  k, _, c = probs_KxNxC.shape
  votes_NxC = np.eye(c, dtype=np.int64)[np.argmax(probs_KxNxC, axis=-1)].sum(axis=0)
  top_N = votes_NxC.max(axis=-1, keepdims=True)
  leaders_NxC = votes_NxC == top_N
  mean_NxC = probs_KxNxC.mean(axis=0)
  winners = np.argmax(np.where(leaders_NxC, mean_NxC, -np.inf), axis=-1)
  return winners, leaders_NxC.sum(axis=-1) > 1


def combine(probs_KxNxC: np.ndarray, labels_N: np.ndarray) -> Dict:
  """Each member's accuracy and both ensembles' accuracy on the same images."""
  if probs_KxNxC.ndim != 3 or probs_KxNxC.shape[1] != len(labels_N):
    raise ValueError(f"probabilities {probs_KxNxC.shape} do not match "
                     f"{len(labels_N)} labels")
  n = len(labels_N)

  def score(preds_N):
    correct = int(np.sum(preds_N == labels_N))
    return {"correct": correct, "accuracy": correct / n}

  voted, tied = majority_vote(probs_KxNxC)
  return {"count": n,
          "members": [score(np.argmax(p, axis=-1)) for p in probs_KxNxC],
          "average": score(average_predictions(probs_KxNxC)),
          "vote": dict(score(voted), ties=int(tied.sum()),
                       tie_break="highest averaged probability among tied classes")}


def _same(configs: Sequence[ml_collections.ConfigDict], get, what: str,
          workdirs: Sequence[str]):
  """The one value of `get(config)` all members share; else a UserError."""
  values = [get(c) for c in configs]
  if any(v != values[0] for v in values):
    listing = ", ".join(f"{w}: {v}" for w, v in zip(workdirs, values))
    raise UserError(f"the members do not share one {what} ({listing}): ensemble "
                    "runs evaluated on the same images.")
  return values[0]


def load_eval_split(configs: Sequence[ml_collections.ConfigDict],
                    workdirs: Sequence[str], split: str,
                    mnist_dir: Optional[str] = None) -> data_lib.Split:
  """The images every member is scored on: their test or validation split."""
  if split == "test":
    name = _same(configs, lambda c: c.data.test_split, "config.data.test_split",
                 workdirs)
    return data_lib.load_split(name, mnist_dir)
  size = _same(configs, lambda c: int(c.data.get("validation_size", 0)),
               "config.data.validation_size", workdirs)
  if size <= 0:
    raise UserError("the members have no validation split "
                    "(config.data.validation_size = 0): train them with "
                    "--config.data.validation_size=5000, or use --split test.")
  train = data_lib.load_split(_same(configs, lambda c: c.data.train_split,
                                    "config.data.train_split", workdirs), mnist_dir)
  return data_lib.split_validation(train, size)[1]  # the one definition of it


def _check_workdirs(workdirs: Sequence[str]) -> None:
  named = [w for w in workdirs if w.strip()]
  if not named:
    raise UserError("no runs given in --workdirs: pass --workdirs runs/a,runs/b[,...].")
  if len(named) != len(workdirs):
    raise UserError(f"--workdirs {','.join(workdirs)} has an empty entry (a comma too "
                    "many): list the runs as runs/a,runs/b[,...].")
  if len(workdirs) < 2:
    raise UserError(f"an ensemble needs at least two runs (got {len(workdirs)}): "
                    "pass --workdirs runs/a,runs/b[,...].")
  normalised = [os.path.realpath(w) for w in workdirs]
  if len(set(normalised)) != len(normalised):
    raise UserError("a run is listed twice in --workdirs: list each run once.")


def evaluate_ensemble(workdirs: Sequence[str], split: str = "test",
                      mnist_dir: Optional[str] = None) -> Dict:
  """Restores every run, scores it and both ensembles on `split`; a JSON-able dict."""
  if split not in SPLITS:
    raise UserError(f"--split {split}: use one of {', '.join(SPLITS)}.")
  _check_workdirs(workdirs)
  configs = [run_dir.read_config(w) for w in workdirs]
  images = load_eval_split(configs, workdirs, split, mnist_dir)
  # Each member's probabilities through the engine's evaluator (members may be
  # different models, so one call each rather than one vmapped call).
  probs = np.stack([trained.load(w).probabilities(images.images) for w in workdirs])
  result = combine(probs, images.labels)
  for member, workdir, config in zip(result["members"], workdirs, configs):
    member.update(workdir=workdir, model=config.model.name,
                  finished=run_dir.is_finished(workdir, int(config.num_epochs)))
  result["split"] = split
  return result


def format_table(result: Dict) -> str:
  """Members and ensembles, one line each, accuracy as a percentage."""
  width = max([len(m["workdir"]) for m in result["members"]] + [24])
  lines = [f"{'member':{width}s}  {'model':12s}  {result['split']} accuracy"]
  for m in result["members"]:
    note = "" if m["finished"] else "  (unfinished run: last checkpoint)"
    lines.append(f"{m['workdir']:{width}s}  {m['model']:12s}  "
                 f"{100 * m['accuracy']:.2f}%{note}")
  lines.append(f"{'average of probabilities':{width}s}  {'':12s}  "
               f"{100 * result['average']['accuracy']:.2f}%")
  vote = result["vote"]
  lines.append(f"{'majority vote':{width}s}  {'':12s}  {100 * vote['accuracy']:.2f}%"
               f"  ({vote['ties']} ties, broken by averaged probabilities)")
  lines.append(f"({result['count']} images)")
  return "\n".join(lines)


def check_out_dir(out_dir: str) -> None:
  """Refuses an --out that is not a folder (e.g. a run's config.json), before
  the members are evaluated."""
  if not out_dir.strip():
    raise UserError("--out is empty: name a folder for ensemble.json, e.g. "
                    "--out results/ensemble.")
  run_dir.refuse_link(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"--out {out_dir} is a file: --out names a folder, into which "
                    f"{RESULT_FILE} is written; give a folder.")


def write_result(result: Dict, out_dir: str) -> str:
  """Writes OUT_DIR/ensemble.json, whole or not at all, and returns its path."""
  check_out_dir(out_dir)
  path = os.path.join(run_dir.make_folder(out_dir, "--out"), RESULT_FILE)
  with run_dir.atomic_file(path, flag="--out") as f:
    json.dump(result, f, indent=2, sort_keys=True)
    f.write("\n")
  return path


def report(workdirs: List[str], split: str, out_dir: Optional[str],
           mnist_dir: Optional[str] = None) -> Dict:
  """The CLI command: evaluate, print the table, write the JSON if asked
  (process 0 only, when several processes evaluate together)."""
  if out_dir is not None:
    check_out_dir(out_dir)
  result = evaluate_ensemble(workdirs, split, mnist_dir)
  print(format_table(result))
  if out_dir is not None and jax.process_index() == 0:
    print(f"wrote {write_result(result, out_dir)}")
  return result
