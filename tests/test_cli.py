"""One command line: each command has its own flags; bad input ends in one
clear line on stderr and exit status 2, never a traceback."""

import csv
import dataclasses
import os
import pathlib
import runpy
import shutil
import subprocess
import sys
import types

import pytest

from mnist_jax import UserError, cli
from mnist_jax.cli import command as command_lib, experiments as cli_experiments
from mnist_jax.core import data, run_dir
from mnist_jax.engine import loop
from mnist_jax.studies import catalog, runner

from helpers import one_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_cli(*args, env_extra=None, unset=("MNIST_DIR",), timeout=300, script=None):
  """`python -m mnist_jax ARGS` in a new process (or `python SCRIPT ARGS`)."""
  env = {k: v for k, v in os.environ.items() if k not in unset}
  env.update(env_extra or {})
  program = [str(REPO / script)] if script else ["-m", "mnist_jax"]
  return subprocess.run([sys.executable, *program, *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


def test_no_data_and_no_network_names_the_variable_and_files(cli_here, monkeypatch, tmp_path):
  monkeypatch.delenv("MNIST_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir", tmp_path / "run")
  one_error_line(result, "MNIST_DIR", "--data_dir", *data.MNIST_FILES)


def test_data_dir_without_the_files_names_what_is_missing(cli_here, monkeypatch, tmp_path):
  folder = tmp_path / "half"
  folder.mkdir()
  (folder / "train-images-idx3-ubyte.gz").write_bytes(b"x")
  monkeypatch.delenv("MNIST_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir", tmp_path / "run",
                    "--data_dir", folder)
  one_error_line(result, "lacks", "t10k-labels-idx1-ubyte.gz")


@pytest.mark.real_data
def test_corrupt_file_is_named(mnist_dir, tmp_path):
  folder = tmp_path / "corrupt"
  shutil.copytree(mnist_dir, folder)
  victim = folder / "train-labels-idx1-ubyte.gz"
  victim.chmod(0o644)
  raw = bytearray(victim.read_bytes())
  raw[100] ^= 0xFF
  victim.write_bytes(bytes(raw))
  with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz is corrupt.*replace"):
    data.prepare(str(folder), str(tmp_path / "tfds"))


def test_impossible_config_is_rejected_before_any_work(cli_here, tmp_path):
  result = cli_here("train", "--config", "configs/cnn.py", "--workdir", tmp_path / "run",
                    "--config.model.strides=(3,3,3)")
  one_error_line(result, "stage", "leaves nothing", "smaller strides")
  assert not (tmp_path / "run").exists()


def test_misspelt_override_is_an_error(tmp_path):
  # A real `python -m mnist_jax train` process; the other errors of train run in this one.
  result = run_cli("train", "--config", "configs/cnn.py", "--workdir", str(tmp_path / "run"),
                   "--config.num_epoch=3")
  one_error_line(result, "num_epoch", "num_epochs")


def test_unknown_command_and_missing_workdir(cli_here, tmp_path):
  one_error_line(cli_here("fit"), "unknown command 'fit'")
  one_error_line(cli_here("train", "--config", "configs/cnn.py"), "--workdir")
  one_error_line(cli_here("evaluate", "--workdir", tmp_path), "config.json not found")


@pytest.mark.real_data
def test_batch_size_larger_than_the_data_is_rejected(cli_here, mnist_dir, tfds_dir, tmp_path,
                                                    monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", tfds_dir)
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir", tmp_path / "r",
                    "--data_dir", mnist_dir, "--config.data.train_split=train[:100]",
                    "--config.batch_size=128")
  one_error_line(result, "batch_size = 128", "100 training images")


# A flag of another command, for every command: (argv, the foreign flag).
FOREIGN_FLAGS = {
    "train": (["train", "--config", "configs/cnn.py", "--workdir", "{w}", "--top", "3"],
              "top"),
    "evaluate": (["evaluate", "--workdir", "{w}", "--config", "configs/cnn.py"], "config"),
    "plot": (["plot", "--workdir", "{w}", "--split", "test"], "split"),
    "predict": (["predict", "--workdir", "{w}", "--digit", "3", "{w}/x.png"], "digit"),
    "ensemble": (["ensemble", "--workdirs", "{w}/a,{w}/b", "--format", "pdf"], "format"),
    "study": (["study", "kernel_size", "--out", "{w}", "--recipe", "cpu"], "recipe"),
    "frontier": (["frontier", "--out", "{w}", "--preset", "cpu"], "preset"),
    "benchmark": (["benchmark", "--out", "{w}/b.csv", "--workdir", "{w}"], "workdir"),
    "speedrun": (["speedrun", "--out", "{w}", "--workdir", "{w}"], "workdir"),
    "export": (["export", "--workdir", "{w}", "--out", "{w}/e", "--top", "3"], "top"),
}


def test_every_command_is_checked_for_foreign_flags():
  assert sorted(FOREIGN_FLAGS) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(FOREIGN_FLAGS))
def test_a_flag_of_another_command_is_an_error(name, cli_here, tmp_path):
  argv, flag = FOREIGN_FLAGS[name]
  workdir = tmp_path / "w"
  result = cli_here(*[a.replace("{w}", str(workdir)) for a in argv])
  one_error_line(result, f"{name}: Unknown command line flag '{flag}'",
                 f"mnist_jax {name} -h")
  assert not workdir.exists()  # refused before any work


def test_ctrl_c_ends_with_130_and_no_traceback(cli_here, monkeypatch):
  def interrupted(fv, args):
    raise KeyboardInterrupt
  monkeypatch.setitem(cli.COMMANDS, "plot",
                      dataclasses.replace(cli.COMMANDS["plot"], run=interrupted))
  result = cli_here("plot", "--workdir", "w")
  assert result.returncode == 130 and result.stderr == "interrupted\n"


def test_foreign_flag_through_python_dash_m(tmp_path):
  # A real `python -m mnist_jax evaluate` process.
  result = run_cli("evaluate", "--workdir", str(tmp_path), "--config", "configs/cnn.py")
  one_error_line(result, "Unknown command line flag 'config'")


def test_help_lists_only_the_commands_own_flags(cli_here):
  def flags_of(name):
    result = cli_here(name, "-h")
    assert result.returncode == 0 and result.stdout.startswith(
        f"usage: python -m mnist_jax {name}")
    return {line.split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("  --")}
  assert {"--config", "--workdir", "--seeds", "--[no]force", "--data_dir"} <= flags_of("train")
  assert not {"--top", "--workdirs", "--preset"} & flags_of("train")
  assert flags_of("predict") == {"--workdir", "--top", "--[no]json", "--figure",
                                 "--figure_limit", "--[no]no-preprocess",
                                 "--uncertain_below", "--background_scale",
                                 "--min_contrast", "--min_part", "--[no]deskew"}
  assert "--variants" in flags_of("benchmark") and "--workdir" not in flags_of("benchmark")
  assert {"--preset", "--[no]quick", "--[no]vmap_seeds"} <= flags_of("study")
  overview = cli_here("--help").stdout
  assert all(f"  {name} " in overview for name in cli.COMMANDS)


def test_config_overrides_are_typed_by_the_config_file():
  fv, args = command_lib.parse(cli.COMMANDS["train"], [
      "--config", "configs/cnn.py", "--workdir", "w", "--config.num_epochs=3",
      "--config.optimizer.learning_rate=0.01", "--config.model.kernel_sizes=(5,5,5)",
      "--config.augment.enabled=false"])
  config = fv.config
  assert (config.num_epochs, config.optimizer.learning_rate) == (3, 0.01)
  assert config.model.kernel_sizes == (5, 5, 5) and config.augment.enabled is False
  assert args == [] and config.batch_size == 128  # the rest as in the file


def test_train_seeds_trains_one_workdir_per_seed(cli_here, tmp_path, monkeypatch):
  calls = []

  def fake_train_runs(config, seeds, workdirs, *, mnist_dir=None, force=False, **_):
    calls.append((config.num_epochs, seeds, workdirs, mnist_dir, force))
    return [{"epoch": 1, "test_accuracy": 0.5 + s / 10, "test_loss": 1.0} for s in seeds]

  monkeypatch.setattr(loop, "train_runs", fake_train_runs)
  monkeypatch.setenv("XLA_FLAGS", "")  # the command sets its GPU flag there
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir",
                    str(tmp_path), "--seeds", "0,2", "--config.num_epochs=1",
                    "--data_dir", "D", "--force")
  assert result.returncode == 0, result.stderr
  assert calls == [(1, [0, 2], [str(tmp_path / "seed0"), str(tmp_path / "seed2")],
                    "D", True)]
  lines = [l for l in result.stdout.splitlines() if l.startswith("seed ")]
  assert lines[0].startswith("seed 0: final test accuracy 0.5000")
  assert lines[1].startswith("seed 2: final test accuracy 0.7000")
  assert lines[1].endswith(str(tmp_path / "seed2"))


@pytest.mark.parametrize("seeds", ["0,x", "1,1"])
def test_train_refuses_bad_seeds(seeds, cli_here, tmp_path):
  result = cli_here("train", "--config", "configs/mlp.py", "--workdir",
                    str(tmp_path / "w"), "--seeds", seeds)
  one_error_line(result, f"--seeds {seeds}")
  assert not (tmp_path / "w").exists()


def test_study_needs_a_known_name_and_preset(cli_here, tmp_path):
  for argv in (["study", "kernel_sizes"], ["study"]):
    one_error_line(cli_here(*argv), ", ".join(catalog.find_studies()))
  result = cli_here("study", "kernel_size", "--preset", "gpu", "--out",
                    str(tmp_path / "s"))
  one_error_line(result, "no preset 'gpu'", "cpu, full")
  assert not (tmp_path / "s").exists()


def test_the_study_names_are_the_studies_in_experiments():
  declared = {}
  for path in sorted((REPO / "experiments").glob("*.py")):
    module = cli_experiments.load_experiment(path.stem)
    if hasattr(module, "STUDY"):
      declared[path.stem] = module.STUDY.name
  assert declared == {name: name for name in catalog.find_studies()}
  assert set(declared) == {"mlp_vs_cnn", "robustness", "kernel_size", "stride", "lecun1998"}


def test_frontier_refuses_an_unknown_recipe(cli_here, tmp_path):
  result = cli_here("frontier", "--recipe", "gpu", "--out", str(tmp_path / "f"))
  one_error_line(result, "--recipe gpu", "cpu, full")


def test_frontier_takes_the_study_placement_flags(cli_here, tmp_path):
  # The flags reach the study runner's executor, which refuses an address
  # without --executor ray before any member trains.
  result = cli_here("frontier", "--address", "10.0.0.1:6379", "--cpus_per_run",
                    "2", "--out", str(tmp_path / "f"))
  one_error_line(result, "--address names a Ray cluster: add --executor ray.")
  assert not (tmp_path / "f").exists()


def test_benchmark_refuses_bad_input_with_exit_2(cli_here, tmp_path):
  out = tmp_path / "b.csv"
  for extra in (["--seeds", "1"], ["--variants", "model.conv_impl"],
                ["--variants", "model.conv_implementation=xla"], ["--rounds", "x"]):
    result = cli_here("benchmark", "--configs", "configs/mlp.py", "--rounds",
                      "1", "--steps", "1", "--out", str(out), *extra)
    one_error_line(result)
  assert not out.exists()


def fake_train_and_evaluate(config, workdir, **_):
  """Writes a finished run as train_and_evaluate would, with a test accuracy of
  0.9 + kernel size / 100 + seed / 1000, in no time."""
  accuracy = 0.9 + config.model.kernel_sizes[0] / 100 + config.seed / 1000
  run_dir.write_config(workdir, config)
  for epoch in range(1, config.num_epochs + 1):
    metrics = dict.fromkeys(run_dir.METRIC_KEYS, 1.0)
    metrics.update(epoch=epoch, test_accuracy=accuracy)
    run_dir.append_metrics(workdir, metrics)
  return {"test_accuracy": accuracy}


def test_study_quick_writes_its_tables_and_the_script_is_the_same_command(
    cli_here, capsys, tmp_path, monkeypatch):
  # Training is faked (in this process): the real quick study trains 8 CNNs,
  # 408 s on the shared 2-core machine; tests/test_experiments.py trains studies.
  monkeypatch.setattr(runner, "train_and_evaluate", fake_train_and_evaluate)
  monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: (None, None))
  out = tmp_path / "kernel_size"
  result = cli_here("study", "kernel_size", "--quick", "--out", str(out))
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in out.iterdir()) == [
      "cnn_k1", "cnn_k3", "cnn_k5", "cnn_k7", "figures", "tables", "train.lock"]
  assert sorted(p.name for p in (out / "cnn_k3").iterdir()) == ["seed_0", "seed_1"]
  assert run_dir.read_config(str(out / "cnn_k3" / "seed_1")).num_epochs == 1  # quick
  for ext in ("md", "tex", "csv"):
    assert (out / "tables" / f"kernel_size.{ext}").stat().st_size > 0
  with open(out / "tables" / "kernel_size.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["model"] for r in rows] == ["CNN 1x1", "CNN 3x3", "CNN 5x5", "CNN 7x7"]
  assert all(r["seeds"] == "2" for r in rows)
  assert [float(r["test accuracy (%)_mean"]) for r in rows] == pytest.approx(
      [91.05, 93.05, 95.05, 97.05])
  # The script, run as a script, is the same command: it rebuilds those tables.
  (out / "tables" / "kernel_size.csv").unlink()
  script = run_cli("--quick", "--out", str(out), "--tables_only",
                   script="experiments/kernel_size.py", env_extra={"PYTHONPATH": str(REPO)})
  assert script.returncode == 0, script.stderr[-3000:]
  with open(out / "tables" / "kernel_size.csv") as f:
    assert list(csv.DictReader(f)) == rows
  # Its error, as a script too (in this process: runpy runs it as __main__).
  monkeypatch.setattr(sys, "argv", ["experiments/kernel_size.py", "--preset", "gpu"])
  with pytest.raises(SystemExit) as exited:
    runpy.run_path(str(REPO / "experiments" / "kernel_size.py"), run_name="__main__")
  stderr = capsys.readouterr().err
  one_error_line(types.SimpleNamespace(returncode=exited.value.code, stderr=stderr),
                 "no preset 'gpu'")
