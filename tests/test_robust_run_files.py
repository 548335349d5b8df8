"""A run directory cannot be turned against its user: each checkpoint knows
the config that trained it, planted links are refused, every file read is
checked, every write is whole or absent, `evaluate` names its checkpoint and
`--force` removes all the old run wrote.

A tiny MLP trains in this process on random images (robust_support); the
commands run in this process too, on random test images in place of MNIST.
"""

import errno
import json
import os
import shutil

import pytest

from mnist_jax import UserError
from mnist_jax.core import data as data_lib
from mnist_jax.core import run_dir
from mnist_jax.core import workdir as workdir_lib
from mnist_jax.engine import checkpoint
from mnist_jax.engine.loop import train_and_evaluate

from helpers import assert_same_bits, final_params, one_error_line, without_times
from robust_support import OVERRIDES, random_data, tiny_config

# `train`'s flags for tiny_config(): the same config as the runs here.
TINY_TRAIN = ["--config", "configs/mlp.py",
              *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def train(workdir, **overrides):
  return train_and_evaluate(tiny_config(**overrides), str(workdir), data=random_data(),
                            verbose=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny run: checkpoints 28, 35 and 40 (20 steps per epoch)."""
  workdir = tmp_path_factory.mktemp("trust") / "run"
  train(workdir)
  return workdir


@pytest.fixture
def run(finished, tmp_path):
  """A copy of the finished run, free to damage."""
  return shutil.copytree(finished, tmp_path / "run")


@pytest.fixture(autouse=True)
def random_mnist(monkeypatch):
  """The commands read random images in place of MNIST (no data files needed)."""
  train_split, test_split = random_data()
  monkeypatch.setattr(data_lib, "load_split", lambda name, mnist_dir=None: test_split)
  monkeypatch.setattr(data_lib, "load_mnist",
                      lambda *a, **k: (train_split, test_split))


def files_in(folder):
  return sorted(os.path.relpath(os.path.join(d, f), folder)
                for d, _, names in os.walk(folder) for f in names)


# --- 1. a checkpoint knows the config that trained it ------------------------

@pytest.mark.parametrize("override, difference", [
    ({"optimizer.learning_rate": 0.5, "num_epochs": 3},
     "num_epochs: 2 -> 3; optimizer.learning_rate: 0.001 -> 0.5"),
    ({"model.hidden_features": (8,)}, "model.hidden_features: [16] -> [8]"),
])
def test_a_resume_under_another_config_is_refused_before_config_json_is_written(
    run, override, difference):
  """Without config.json, another config is still refused: neither resumed
  at another learning rate nor, for another model, its intact checkpoints
  called damaged."""
  os.remove(run / run_dir.CONFIG_FILE)
  before = files_in(run)
  with pytest.raises(UserError) as error:
    train(run, **override)
  message = str(error.value)
  assert f"trained with another config ({difference}); nothing was written" in message
  assert "damaged" not in message and "delete those intact checkpoints" in message
  assert files_in(run) == before  # no config.json, no checkpoint touched


def test_evaluating_under_a_swapped_config_json_is_refused(run, cli_here):
  config = json.loads((run / run_dir.CONFIG_FILE).read_text())
  config["model"]["hidden_features"] = [8]
  (run / run_dir.CONFIG_FILE).write_text(json.dumps(config))
  line = one_error_line(cli_here("evaluate", "--workdir", run))
  assert "config.json is not the config that trained the checkpoint of step 40" in line
  assert "model.hidden_features: [16] -> [8]" in line and "damaged" not in line


def test_checkpoints_saved_without_their_config_still_restore_and_resume(
    run, finished, cli_here):
  """Checkpoints of older code have no config item: config.json stands for it."""
  for step in (28, 35, 40):
    shutil.rmtree(run_dir.checkpoint_dir(str(run)) + f"/{step}/config")
  mngr = checkpoint.manager(str(run))
  assert checkpoint.saved_config(mngr, 40) is None
  assert_same_bits(final_params(run), final_params(finished))
  assert cli_here("evaluate", "--workdir", run).returncode == 0
  train(run)  # the same config: complete, nothing to train
  assert run_dir.read_metrics(str(run)) == run_dir.read_metrics(str(finished))


def test_each_checkpoint_holds_its_config_and_its_hash(finished):
  mngr = checkpoint.manager(str(finished))
  saved = checkpoint.saved_config(mngr, 28)
  assert saved == run_dir.config_as_dict(tiny_config())
  record = mngr.restore(28, args=checkpoint.ocp.args.Composite(
      config=checkpoint.ocp.args.JsonRestore()))["config"]
  assert record == checkpoint.config_record(saved) and len(record["sha256"]) == 64


# --- 2. nothing is written outside the run directory --------------------------

@pytest.mark.parametrize("name", [workdir_lib.LOCK_FILE, run_dir.METRICS_FILE,
                                  run_dir.CONFIG_FILE])
def test_a_planted_link_is_refused_and_its_target_left_alone(run, tmp_path, name):
  """Followed, a link would have train.lock's target truncated to 0 bytes
  and metrics.jsonl's appended to."""
  precious = tmp_path / "precious.txt"
  precious.write_text("mine\n")
  os.remove(run / name)
  os.symlink(precious, run / name)
  with pytest.raises(UserError, match=f"{name} is a symbolic link .*delete the link"):
    train(run)
  assert precious.read_text() == "mine\n"


def test_a_planted_temporary_file_link_is_never_written_through(tmp_path):
  precious = tmp_path / "precious.txt"
  precious.write_text("mine\n")
  workdir = tmp_path / "run"
  workdir.mkdir()
  os.symlink(precious, workdir / "config.json.tmp")
  train(workdir, num_epochs=1)
  assert precious.read_text() == "mine\n"
  assert not os.path.islink(workdir / run_dir.CONFIG_FILE)
  assert run_dir.read_config(str(workdir)).num_epochs == 1


@pytest.mark.parametrize("folder", [run_dir.CHECKPOINT_DIR, run_dir.FIGURES_DIR])
def test_a_folder_replaced_by_a_link_is_refused(run, tmp_path, cli_here, folder):
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  shutil.rmtree(run / folder, ignore_errors=True)
  os.symlink(elsewhere, run / folder)
  args = ("plot", "--workdir", run) if folder == run_dir.FIGURES_DIR else (
      "evaluate", "--workdir", run)
  assert f"{folder} is a symbolic link" in one_error_line(cli_here(*args))
  assert os.listdir(elsewhere) == []


# --- 3. every file read is checked ------------------------------------------

BAD_CONFIGS = {"{garbage": "is not valid JSON", "": "is not valid JSON",
               "[1, 2, 3]": "holds a JSON list, not a run's config",
               "{}": "has no model block",
               '{"model": {"name": "mlp"}, "num_epochs": "many"}': "does not fit"}


@pytest.mark.parametrize("text", list(BAD_CONFIGS), ids=range(len(BAD_CONFIGS)))
@pytest.mark.parametrize("name", ["evaluate", "plot", "ensemble", "train"])
def test_a_damaged_config_json_is_one_line_for_every_command(run, tmp_path, cli_here,
                                                             text, name):
  """One error line, not a JSONDecodeError traceback."""
  (run / run_dir.CONFIG_FILE).write_text(text)
  args = {"evaluate": ["--workdir", run], "plot": ["--workdir", run],
          "ensemble": ["--workdirs", f"{run},{shutil.copytree(run, tmp_path / 'b')}"],
          "train": [*TINY_TRAIN, "--workdir", run]}[name]
  line = one_error_line(cli_here(name, *args))
  if name == "train" and "many" in text:  # a valid config, compared key by key
    assert "holds a run with another config (" in line and "num_epochs: many -> 2" in line
    return
  assert f"{run / run_dir.CONFIG_FILE} " in line and BAD_CONFIGS[text] in line
  assert "put back the run's config.json" in line or "--force" in line


def _metric_lines(run):
  return [json.loads(line) for line in (run / run_dir.METRICS_FILE).read_text().splitlines()]


@pytest.mark.parametrize("change, problem", [
    ({"test_accuracy": "high"}, "test_accuracy = 'high' is not a number"),
    ({"epoch": 1.5}, "epoch = 1.5 is not a whole number"),
    ({"step": [20]}, "step = [20] is not a number"),
    ({"train_loss": None}, "train_loss = None is not a number"),
    ({"test_loss": True}, "test_loss = True is not a number"),
])
@pytest.mark.parametrize("line", [0, 1], ids=["first", "last"])
def test_an_epoch_line_with_a_wrong_value_is_one_line_naming_it(run, cli_here, change,
                                                                 problem, line):
  lines = _metric_lines(run)
  lines[line].update(change)
  (run / run_dir.METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in lines))
  message = one_error_line(cli_here("plot", "--workdir", run))
  assert f"metrics.jsonl line {line + 1} is not an epoch line ({problem}" in message


def test_an_epoch_line_missing_keys_is_one_line_naming_them(run, cli_here):
  lines = _metric_lines(run)
  del lines[0]["test_accuracy"], lines[0]["step"]
  (run / run_dir.METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in lines))
  with pytest.raises(UserError, match=r"line 1 is not an epoch line \(it lacks step, "
                     r"test_accuracy;"):
    train(run)


@pytest.mark.parametrize("name, text, problem", [
    (run_dir.EXTRAS_FILE, "[1, 2]", "holds a JSON list, not an object"),
    (run_dir.EXTRAS_FILE, "{oops", "is not valid JSON"),
    (run_dir.REJECTED_FILE, "[]", "holds a JSON list, not an object"),
    (run_dir.REJECTED_FILE, '{"reason": 3}', "has a reason that is not text"),
    (run_dir.FAILED_FILE, '"failed"', "holds a JSON str, not an object"),
    (run_dir.DIVERGED_FILE, "{", "is not valid JSON"),
])
def test_a_damaged_record_file_is_one_line_naming_it(tmp_path, name, text, problem):
  (tmp_path / name).write_text(text)
  read = {run_dir.EXTRAS_FILE: run_dir.read_extras,
          run_dir.REJECTED_FILE: run_dir.read_rejection,
          run_dir.FAILED_FILE: run_dir.read_failure,
          run_dir.DIVERGED_FILE: run_dir.read_divergence}[name]
  with pytest.raises(UserError, match=f"{name} {problem}.*delete it"):
    read(str(tmp_path))


def test_a_cut_last_line_with_its_checkpoint_resumes_from_an_older_one(run, finished,
                                                                      capfd):
  """The metrics file lost the end of epoch 2's line (a full disk) though
  checkpoint 40 exists: only --force got out; the run now trains steps
  36-40 again from checkpoint 35, to the same bits."""
  text = (run / run_dir.METRICS_FILE).read_bytes()
  (run / run_dir.METRICS_FILE).write_bytes(text[:len(text) - 60])
  train(run)
  err = capfd.readouterr().err
  assert "the checkpoints of steps 40 go past them: deleting those (intact)" in err
  assert "resume from step 35" in err
  assert err.count("left out its last line") == 1
  assert (without_times(run_dir.read_metrics(str(run)))
          == without_times(run_dir.read_metrics(str(finished))))
  assert_same_bits(final_params(run), final_params(finished))


def test_checkpoints_replaced_by_a_file_is_one_line_and_changes_nothing(run, cli_here):
  shutil.rmtree(run / run_dir.CHECKPOINT_DIR)
  (run / run_dir.CHECKPOINT_DIR).write_text("not a folder")
  before = (run / run_dir.METRICS_FILE).read_text()
  for args in (("evaluate", "--workdir", run),
               ("train", *TINY_TRAIN, "--workdir", run)):
    assert "checkpoints is a file where the run keeps a folder" in one_error_line(
        cli_here(*args))
  assert (run / run_dir.METRICS_FILE).read_text() == before


# --- 4. every write is whole or absent ---------------------------------------

def _failing_savefig(error):
  def savefig(self, f, **kwargs):
    f.write(b"\x89PNG partial")
    raise error
  return savefig


@pytest.mark.parametrize("error, message", [
    (ENOSPC, "no space left on the device holding"),
    (PermissionError(errno.EACCES, "Permission denied"), "(Permission denied): make it "
     "writable"),
])
def test_plot_on_a_full_disk_or_read_only_folder_is_one_line_leaving_no_file(
    run, cli_here, monkeypatch, error, message):
  """A failed figure write is one line, with no PermissionError traceback
  and no empty PNG left. (Injected: a test cannot count on mounting a tmpfs, and
  root writes read-only folders.)"""
  from matplotlib.figure import Figure
  monkeypatch.setattr(Figure, "savefig", _failing_savefig(error))
  assert message in one_error_line(cli_here("plot", "--workdir", run))
  assert os.listdir(run / run_dir.FIGURES_DIR) == []


def test_a_run_folder_that_cannot_be_written_is_one_line(run, cli_here, monkeypatch):
  def no(*args, **kwargs):
    raise PermissionError(errno.EROFS, "Read-only file system")
  monkeypatch.setattr(os, "makedirs", no)
  shutil.rmtree(run / run_dir.FIGURES_DIR, ignore_errors=True)
  line = one_error_line(cli_here("plot", "--workdir", run))
  assert "figures (Read-only file system)" in line


def test_ensemble_out_must_be_a_folder_and_is_refused_before_any_work(run, tmp_path,
                                                                      cli_here):
  """`--out runs/a/config.json` is one line, not a FileExistsError."""
  other = shutil.copytree(run, tmp_path / "b")
  before = (run / run_dir.CONFIG_FILE).read_text()
  out = run / run_dir.CONFIG_FILE
  line = one_error_line(cli_here("ensemble", "--workdirs", f"{run},{other}", "--out", out))
  assert f"--out {out} is a file: --out names a folder" in line
  assert (run / run_dir.CONFIG_FILE).read_text() == before


def test_ensemble_out_on_a_full_disk_leaves_no_file(run, tmp_path, cli_here, monkeypatch):
  other = shutil.copytree(run, tmp_path / "b")
  real_dump = json.dump

  def dump(value, f, **kwargs):
    real_dump(value, f, **kwargs)
    raise ENOSPC
  monkeypatch.setattr(json, "dump", dump)
  out = tmp_path / "ensemble"
  line = one_error_line(cli_here("ensemble", "--workdirs", f"{run},{other}", "--out", out))
  assert "no space left on the device holding" in line and os.listdir(out) == []


def test_a_full_disk_when_the_lock_is_taken_leaves_no_lock_file(tmp_path, monkeypatch):
  """One line, not an ENOSPC traceback, and no 0-byte train.lock left."""
  monkeypatch.setattr(workdir_lib.os, "pwrite", lambda *a: (_ for _ in ()).throw(ENOSPC))
  with pytest.raises(UserError, match="no space left on the device holding .*train.lock"):
    train(tmp_path / "run")
  assert os.listdir(tmp_path / "run") == []


def test_a_full_disk_during_a_metrics_line_leaves_the_file_as_it_was(tmp_path,
                                                                     monkeypatch):
  line = dict({k: 0.5 for k in run_dir.METRIC_KEYS}, epoch=1, step=20, test_count=10)
  run_dir.append_metrics(str(tmp_path), line)
  before = (tmp_path / run_dir.METRICS_FILE).read_bytes()
  real_write = os.write

  def write(fd, data):
    real_write(fd, data[:10])
    raise ENOSPC
  monkeypatch.setattr(run_dir.os, "write", write)
  with pytest.raises(UserError, match="no space left"):
    run_dir.append_metrics(str(tmp_path), dict(line, epoch=2, step=40))
  assert (tmp_path / run_dir.METRICS_FILE).read_bytes() == before


def test_a_full_disk_while_writing_config_json_leaves_the_old_one(run, monkeypatch):
  before = (run / run_dir.CONFIG_FILE).read_text()
  monkeypatch.setattr(run_dir.os, "fsync", lambda fd: (_ for _ in ()).throw(ENOSPC))
  with pytest.raises(UserError, match="no space left"):
    run_dir.write_config(str(run), tiny_config(num_epochs=5))
  assert (run / run_dir.CONFIG_FILE).read_text() == before
  assert [n for n in os.listdir(run) if n.endswith(".tmp")] == []


# --- 7. evaluate names its checkpoint -----------------------------------------

def test_evaluate_names_the_final_checkpoint_it_evaluated(run, cli_here):
  result = cli_here("evaluate", "--workdir", run)
  assert result.returncode == 0 and result.stderr == ""
  assert result.stdout.startswith("checkpoint of step 40, after epoch 2: test loss")


def test_evaluate_warns_when_the_final_checkpoint_is_missing(run, cli_here):
  """The newest checkpoint deleted: an older one's accuracy, said to be so."""
  shutil.rmtree(run_dir.checkpoint_dir(str(run)) + "/40")
  result = cli_here("evaluate", "--workdir", run)
  assert result.returncode == 0
  assert result.stdout.startswith("checkpoint of step 35, epoch 2, batch 15: test loss")
  assert "not the run's final one (step 40" in result.stderr


def test_evaluate_warns_that_an_unfinished_run_is_unfinished(run, cli_here):
  lines = (run / run_dir.METRICS_FILE).read_text().splitlines(keepends=True)
  (run / run_dir.METRICS_FILE).write_text(lines[0])
  shutil.rmtree(run_dir.checkpoint_dir(str(run)) + "/40")
  result = cli_here("evaluate", "--workdir", run)
  assert result.returncode == 0 and "is unfinished" in result.stderr


def test_a_diverged_run_says_so_instead_of_its_numbers(tmp_path, cli_here):
  workdir = tmp_path / "run"
  with pytest.raises(UserError, match="training diverged"):
    train(workdir, **{"optimizer.learning_rate": 1e30})
  for name in ("evaluate", "plot"):
    line = one_error_line(cli_here(name, "--workdir", workdir))
    assert "stopped without a result (training diverged" in line
    assert "test loss" not in line
  train(workdir, num_epochs=1)  # no result yet: the workdir is free for a new start
  assert run_dir.read_divergence(str(workdir)) is None
  assert cli_here("evaluate", "--workdir", workdir).returncode == 0


# --- 10. --force removes what the old run wrote --------------------------------

def test_force_removes_everything_the_old_run_wrote_and_keeps_user_files(run, capfd):
  """--force over a study's run with another model keeps neither the old
  extras.json (the old parameter count) nor its event files."""
  run_dir.update_extras(str(run), num_params=238_510)
  (run / run_dir.FIGURES_DIR).mkdir()
  (run / run_dir.FIGURES_DIR / "learning_curves.png").write_bytes(b"png")
  (run / "notes.txt").write_text("mine")
  old_events = [n for n in os.listdir(run) if n.startswith("events.out.tfevents")]
  assert old_events
  train_and_evaluate(tiny_config(**{"model.hidden_features": (8,), "num_epochs": 1}),
                     str(run), data=random_data(), verbose=False, force=True)
  names = os.listdir(run)
  assert run_dir.EXTRAS_FILE not in names and run_dir.FIGURES_DIR not in names
  assert not set(old_events) & set(names)
  assert (run / "notes.txt").read_text() == "mine"
  assert "--force kept what the package did not write" in capfd.readouterr().err
  assert [m["epoch"] for m in run_dir.read_metrics(str(run))] == [1]
  assert checkpoint.saved_config(checkpoint.manager(str(run)), 20)["model"][
      "hidden_features"] == [8]


def test_every_figure_plot_draws_is_one_force_removes():
  from mnist_jax.inference import figures, plots
  assert set(figures.FIGSIZES) == set(run_dir.FIGURE_NAMES)
  assert set(plots.FORMATS) == set(run_dir.FIGURE_FORMATS)


def test_a_folder_in_place_of_a_run_file_is_one_line(run, cli_here):
  os.remove(run / run_dir.CONFIG_FILE)
  (run / run_dir.CONFIG_FILE).mkdir()
  assert "config.json is a folder, not the file" in one_error_line(
      cli_here("evaluate", "--workdir", run))
