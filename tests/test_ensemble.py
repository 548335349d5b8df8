"""Ensembles: vote and average on hand-made probabilities, then on trained runs."""

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.inference import ensemble
from mnist_jax.engine.restore import restore_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[1]


def probs(*rows_per_member):
  """K x N x C array from nested lists; each row is normalised to sum to 1."""
  p = np.asarray(rows_per_member, np.float64)
  return p / p.sum(axis=-1, keepdims=True)


def test_vote_and_average_disagree_when_one_member_is_very_sure():
  # Two members lean to class 0, one is certain of class 1.
  p = probs([[0.55, 0.45, 0.0]], [[0.55, 0.45, 0.0]], [[0.0, 1.0, 0.0]])
  assert ensemble.majority_vote(p)[0].tolist() == [0]
  assert ensemble.average_predictions(p).tolist() == [1]  # mean: 0.37 vs 0.63
  result = ensemble.combine(p, np.array([0]))
  assert result["vote"]["accuracy"] == 1.0 and result["average"]["accuracy"] == 0.0
  assert [m["correct"] for m in result["members"]] == [1, 1, 0]


def test_a_tie_goes_to_the_tied_class_with_the_highest_mean_probability():
  # Three members, three different answers; class 3 has the highest mean
  # probability but no vote, so it cannot win the vote.
  p = probs([[0.40, 0.0, 0.0, 0.35, 0.25]],
            [[0.0, 0.36, 0.0, 0.35, 0.29]],
            [[0.0, 0.0, 0.38, 0.35, 0.27]])
  voted, tied = ensemble.majority_vote(p)
  assert ensemble.average_predictions(p).tolist() == [3]
  assert tied.tolist() == [True]
  assert voted.tolist() == [0]  # means of the tied classes: 0.133, 0.12, 0.127


def test_a_clear_majority_is_not_a_tie_and_accuracies_count_every_image():
  p = probs([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],
            [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]],
            [[0.1, 0.9], [0.4, 0.6], [0.3, 0.7]])
  voted, tied = ensemble.majority_vote(p)
  assert voted.tolist() == [0, 1, 1] and not tied.any()
  result = ensemble.combine(p, np.array([0, 1, 0]))
  assert result["count"] == 3
  assert result["vote"]["correct"] == 2 and result["vote"]["ties"] == 0
  assert result["members"][0]["accuracy"] == 1.0
  assert result["members"][2]["correct"] == 1


@pytest.mark.real_data
def test_ensemble_of_trained_runs_matches_their_own_evaluation(mlp_run, cnn_run):
  result = ensemble.evaluate_ensemble([mlp_run, cnn_run], "test")
  assert result["count"] == 10_000 and result["split"] == "test"
  for member, workdir in zip(result["members"], [mlp_run, cnn_run]):
    # The same checkpoint scored by the training code's evaluation.
    assert member["accuracy"] == pytest.approx(restore_and_evaluate(workdir)["accuracy"])
    assert member["finished"]
  assert [m["model"] for m in result["members"]] == ["mlp", "cnn"]
  best = max(m["accuracy"] for m in result["members"])
  assert result["average"]["accuracy"] > best - 0.05
  table = ensemble.format_table(result)
  assert "majority vote" in table and mlp_run in table


@pytest.mark.real_data
def test_cli_prints_the_table_and_writes_ensemble_json(mlp_run, cnn_run, tmp_path):
  env = dict(os.environ)
  result = subprocess.run(
      [sys.executable, "-m", "mnist_jax", "ensemble", "--workdirs",
       f"{mlp_run},{cnn_run}", "--out", str(tmp_path / "ens")],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert "average of probabilities" in result.stdout
  saved = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
  assert [m["workdir"] for m in saved["members"]] == [mlp_run, cnn_run]
  assert set(saved) >= {"average", "vote", "members", "count", "split"}


@pytest.mark.real_data
def test_the_same_run_twice_or_alone_is_rejected(mlp_run):
  with pytest.raises(UserError, match="listed twice"):
    ensemble.evaluate_ensemble([mlp_run, mlp_run + "/"])
  with pytest.raises(UserError, match="at least two runs"):
    ensemble.evaluate_ensemble([mlp_run])


def data_config(**data):
  return ml_collections.ConfigDict({"data": dict(train_split="train[:1000]",
                                                 test_split="test", **data)})


@pytest.mark.real_data
def test_validation_split_is_the_end_of_the_training_split(real_mnist):
  configs = [data_config(validation_size=100), data_config(validation_size=100)]
  split = ensemble.load_eval_split(configs, ["a", "b"], "validation")
  train, _ = real_mnist
  np.testing.assert_array_equal(split.images, train.images[900:1000])
  np.testing.assert_array_equal(split.labels, train.labels[900:1000])


def test_validation_needs_members_with_one_validation_split():
  with pytest.raises(UserError, match="no validation split"):
    ensemble.load_eval_split([data_config(), data_config()], ["a", "b"], "validation")
  mixed = [data_config(validation_size=100), data_config(validation_size=200)]
  with pytest.raises(UserError, match="do not share one config.data.validation_size"):
    ensemble.load_eval_split(mixed, ["a", "b"], "validation")
