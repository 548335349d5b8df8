"""Shared fixtures (where the real MNIST files are, a prepared tfds copy) and,
under CI, a run that fails when any test was skipped."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from typing import NamedTuple

import pytest

import mnist_jax
from mnist_jax.core import runtime

# XLA:CPU's convolution flag before any test starts a JAX backend, as every
# command sets it: tests that call the engine directly compile the same programs.
mnist_jax.setup_xla()
# The compiled programs on disk (runtime.enable_compilation_cache), as every
# command keeps them: a second test run reads back what the first compiled,
# and the tests' own processes (tests/train_worker.py, the CLI) share them.
runtime.enable_compilation_cache()

# TensorFlow is only a tfds reader here: keep it quiet and off oneDNN.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def ci_forbids_skips() -> bool:
  """True when $CI is set to true/1/yes, as CI services set it.

  Without ../shared/data/mnist every test that needs the real files skips
  (those marked real_data, among them the resume, determinism and 4-device
  tests) and a plain run still exits 0; in CI that run must fail: untested
  is not passed.
  """
  return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class SkipsFailTheRun:
  """Collects skipped tests (xfails excepted) and turns an otherwise passing
  exit status into 'tests failed', naming each skip and its reason."""

  def __init__(self):
    self.skipped = []  # (node id, reason)

  def _note(self, report):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    self.skipped.append((report.nodeid, str(reason)))

  def pytest_runtest_logreport(self, report):
    if report.skipped and not hasattr(report, "wasxfail"):
      self._note(report)

  def pytest_collectreport(self, report):  # a module that skips as a whole
    if report.skipped:
      self._note(report)

  def pytest_sessionfinish(self, session):
    if self.skipped and session.exitstatus == pytest.ExitCode.OK:
      session.exitstatus = pytest.ExitCode.TESTS_FAILED

  def pytest_terminal_summary(self, terminalreporter):
    if self.skipped:
      terminalreporter.section("CI is set: a skipped test fails the run", red=True)
      for nodeid, reason in self.skipped:
        terminalreporter.line(f"skipped: {nodeid}: {reason}")


def pytest_configure(config):
  if ci_forbids_skips():
    config.pluginmanager.register(SkipsFailTheRun(), "skips_fail_the_run")


def real_mnist_dir():
  """$MNIST_DIR, else ../shared/data/mnist beside the checkout, else None."""
  for candidate in (os.environ.get("MNIST_DIR"), SHARED_MNIST):
    if candidate and (pathlib.Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
      return str(candidate)
  return None


class CommandResult(NamedTuple):
  returncode: int
  stdout: str
  stderr: str


@pytest.fixture
def cli_here(capsys, monkeypatch):
  """`python -m mnist_jax ARGS` as a function: the same entry point (cli.run)
  in this process, its exit status and output as a subprocess gives them,
  without a new interpreter's seconds of imports. What a command sets for its
  process is undone after the test: XLA_FLAGS and the working directory. The
  compilation cache a command turns on is the one this process already uses."""
  from mnist_jax import cli
  monkeypatch.chdir(REPO)
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))

  def run(*args):
    capsys.readouterr()  # only this command's output
    with pytest.raises(SystemExit) as exited:
      cli.run([str(a) for a in args])
    out, err = capsys.readouterr()
    return CommandResult(exited.value.code, out, err)
  return run


@pytest.fixture(scope="session")
def mnist_dir():
  path = real_mnist_dir()
  if path is None:
    pytest.skip("real MNIST files not found (set MNIST_DIR)")
  return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """A prepared-data folder: $TFDS_DATA_DIR if set (reused between runs), else fresh."""
  return os.environ.get("TFDS_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def real_mnist(mnist_dir, tfds_dir, tmp_path_factory):
  """(train, test) Splits of the real MNIST, prepared and decoded once per
  run: under pytest-xdist one worker prepares the tfds copy while the others
  wait, rather than two tfds preparations writing one folder at once."""
  from mnist_jax.core import data
  with one_worker_at_a_time(tmp_path_factory, "mnist_prepared"):
    return data.load_mnist(mnist_dir, tfds_dir)


@pytest.fixture(autouse=True)
def mnist_prepared_before_real_data_tests(request):
  """A test that reads MNIST (marked real_data), in this process or in a
  command it starts, finds it prepared and decoded (real_mnist)."""
  if request.node.get_closest_marker("real_data"):
    request.getfixturevalue("real_mnist")


def under_xdist() -> bool:
  return bool(os.environ.get("PYTEST_XDIST_WORKER"))


def one_worker_at_a_time(tmp_path_factory, name):
  """A lock that the pytest-xdist workers of this run take in turn (a file
  lock beside their temporary folders); without xdist, no lock at all."""
  if not under_xdist():
    return contextlib.nullcontext()
  from filelock import FileLock
  return FileLock(str(tmp_path_factory.getbasetemp().parent / f"{name}.lock"))


def made_once(tmp_path_factory, name, make):
  """The folder `name`, filled by `make(folder)` once per test run and then
  only read. Under pytest-xdist the first worker that asks makes it while the
  others wait on a file lock, and every worker reads that one folder (the
  pattern of xdist's docs); without xdist it is a fresh temporary folder."""
  if not under_xdist():
    folder = tmp_path_factory.mktemp(name)
    make(folder)
    return folder
  shared = tmp_path_factory.getbasetemp().parent  # one per run, above the workers'
  folder, done = shared / name, shared / f"{name}.done"
  with one_worker_at_a_time(tmp_path_factory, name):
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
      folder.mkdir()
      make(folder)
      done.touch()
  return folder


@pytest.fixture(scope="session")
def small_data(real_mnist, tmp_path_factory):
  """2,000 train and 1,000 test images of the real MNIST in an .npz, for workers."""
  import numpy as np
  train, test = real_mnist

  def write(folder):
    np.savez(folder / "mnist_small.npz", train_images=train.images[:2000],
             train_labels=train.labels[:2000], test_images=test.images[:1000],
             test_labels=test.labels[:1000])
  return made_once(tmp_path_factory, "data", write) / "mnist_small.npz"


@pytest.fixture(scope="session")
def mlp_run(real_mnist, tmp_path_factory):
  """A run directory of the article's MLP after 1 epoch on real MNIST (~96%)."""
  from configs import mlp as mlp_config
  from mnist_jax.engine.loop import train_and_evaluate
  config = mlp_config.get_config()
  config.num_epochs = 1
  config.optimizer.schedule = "constant"
  config.optimizer.learning_rate = 3e-3

  def train(folder):
    train_and_evaluate(config, str(folder / "mlp"), data=real_mnist, verbose=False)
  return str(made_once(tmp_path_factory, "mlp_run", train) / "mlp")


@pytest.fixture(scope="session")
def cnn_run(real_mnist, tmp_path_factory):
  """A run directory of a tiny two-stage CNN, 2 short epochs on 2,000 images."""
  from configs import cnn as cnn_config
  from mnist_jax.core import data
  from mnist_jax.engine.loop import train_and_evaluate
  config = cnn_config.get_config()
  config.model.update(features=(4, 8), kernel_sizes=(3, 3), strides=(1, 1),
                      activations=("relu", "relu"), pooling=("max", "max"),
                      dense_features=(16,), dropout_rate=0.0)
  config.num_epochs = 2
  config.data.train_split = "train[:2000]"
  train, test = real_mnist
  small = data.Split(train.images[:2000], train.labels[:2000])

  def train(folder):
    train_and_evaluate(config, str(folder / "cnn"), data=(small, test), verbose=False)
  return str(made_once(tmp_path_factory, "cnn_run", train) / "cnn")
