"""The validation split and choosing the reported epoch by validation accuracy."""

import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.engine import checkpoint
from mnist_jax.core import data, run_dir, run_format
from mnist_jax.engine import evaluate as eval_lib, restore as restore_lib
from mnist_jax.engine.loop import train_and_evaluate

from test_train_state_extras import make_config, noise_split
from configs import cnn as cnn_config


def numbered_split(n):
  """Image i is filled with i % 256 and labelled i % 10: rows are traceable."""
  images = (np.arange(n) % 256).astype(np.uint8)[:, None, None, None]
  return data.Split(np.broadcast_to(images, (n, 28, 28, 1)).copy(),
                    (np.arange(n) % 10).astype(np.int32))


def test_validation_is_the_end_of_the_training_split_and_disjoint():
  split = numbered_split(100)
  rest, val = data.split_validation(split, 30)
  assert (len(rest), len(val)) == (70, 30)
  assert rest.images[:, 0, 0, 0].tolist() == list(range(70))
  assert val.images[:, 0, 0, 0].tolist() == list(range(70, 100))
  assert data.split_validation(split, 0) == (split, None)
  with pytest.raises(UserError, match="validation_size = 100"):
    data.split_validation(split, 100)


def lines_with(val_accuracies):
  return [dict({k: 0 for k in run_dir.METRIC_KEYS}, epoch=i + 1, val_accuracy=v,
               test_accuracy=1.0 - v) for i, v in enumerate(val_accuracies)]


def test_selection_picks_the_first_best_validation_epoch_never_the_test():
  lines = lines_with([0.90, 0.95, 0.93, 0.95])
  assert run_dir.selected_index(lines, "best_val") == 1
  assert run_dir.selected_index(lines, "last") == 3
  with pytest.raises(UserError, match="validation_size"):
    run_dir.selected_index([{"epoch": 1, "test_accuracy": 0.9}], "best_val")


def test_metric_lines_need_the_read_keys_and_keep_any_other_measurement(tmp_path):
  line = dict({k: 0 for k in run_dir.METRIC_KEYS}, val_loss=0.1, val_accuracy=0.9)
  measured = dict(line, epoch=2, train_grad_norm=1.5)
  run_dir.append_metrics(str(tmp_path), line)
  run_dir.append_metrics(str(tmp_path), measured)
  with pytest.raises(ValueError, match="lacks.*test_accuracy"):
    run_dir.append_metrics(str(tmp_path), {"epoch": 3})
  with pytest.raises(ValueError, match="train_grad_norm.*not a number"):
    run_dir.append_metrics(str(tmp_path), dict(measured, epoch=3, train_grad_norm="x"))
  assert run_dir.read_metrics(str(tmp_path)) == [line, measured]


def test_keys_added_to_base_config_later_do_not_refuse_an_old_run():
  new = run_dir.config_as_dict(make_config())
  old = {k: v for k, v in new.items() if k not in ("ema_decay", "augment")}
  assert run_dir.config_differences(old, new) == []
  new["ema_decay"] = 0.5
  assert run_dir.config_differences(old, new) == ["ema_decay: (absent) -> 0.5"]


def test_a_model_key_added_later_does_not_refuse_an_old_run():
  new = run_dir.config_as_dict(cnn_config.get_config())
  old = dict(new, model={k: v for k, v in new["model"].items() if k != "padding"})
  assert new["model"]["padding"] == "same"
  assert run_dir.config_differences(run_format.upgraded(old), new) == []
  new["model"]["padding"] = "valid"
  assert run_dir.config_differences(run_format.upgraded(old), new) == [
      "model.padding: same -> valid"]


def test_best_val_run_keeps_and_reports_the_best_validation_epoch(tmp_path):
  # Noise labels: validation accuracy wanders, so the best epoch is usually
  # not the last; whichever it is, everything must agree on it.
  config = make_config(num_epochs=4, select="best_val",
                       **{"data.validation_size": 100,
                          "optimizer.learning_rate": 3e-2})
  workdir = str(tmp_path / "run")
  final = train_and_evaluate(config, workdir, data=(noise_split(300, 5),
                                                    noise_split(50, 6)), verbose=False)
  lines = run_dir.read_metrics(workdir)
  assert all({"val_loss", "val_accuracy", "val_count"} <= set(m) for m in lines)
  assert all(m["val_count"] == 100 for m in lines)
  val = [m["val_accuracy"] for m in lines]
  best = val.index(max(val))
  assert best < len(lines) - 1  # this seed's best is not the last: a real choice
  assert final["selected_epoch"] == best + 1
  assert final["test_accuracy"] == lines[best]["test_accuracy"]

  state = restore_lib.restore_state(workdir, config, which="best")
  assert int(state.step) == lines[best]["step"]
  _, val_split = data.split_validation(noise_split(300, 5), 100)
  assert eval_lib.evaluate(state, val_split, 50)["accuracy"] == max(val)
  selection = checkpoint.best_selection(checkpoint.best_manager(workdir))
  assert selection == {"epoch": best + 1, "val_accuracy": max(val)}
  last = restore_lib.restore_state(workdir, config)
  assert int(last.step) == lines[-1]["step"]


def test_best_checkpoint_is_refused_for_runs_that_select_the_last(tmp_path):
  config = make_config(num_epochs=1)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, data=(noise_split(40, 1), noise_split(50, 2)),
                     verbose=False)
  with pytest.raises(UserError, match="best_val"):
    restore_lib.restore_state(workdir, config, which="best")
