"""Input that could end in a traceback, an abort or a silent surprise: config
files whose own code fails, seeds out of range, None in a field, a train split
overlapping the test split, a model too large for the memory, a broken
environment (XLA_FLAGS, JAX_PLATFORMS) and Ctrl-C at any point. Each is one
`error:` line (or "interrupted", exit 130), before any work."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mnist_jax import UserError, cli
from mnist_jax.core import config as config_lib, runtime, splits
from mnist_jax.engine import state as state_lib

MLP = "configs/mlp.py"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_FILES = {
    "raises": ("def get_config():\n  x = 1\n  raise RuntimeError('boom')\n",
               ["raised RuntimeError: boom (line 3)"]),
    "value_error": ("def get_config():\n  return int('x')\n",
                    ["raised ValueError: invalid literal", "(line 2)"]),
    "missing_module": ("import no_such_module_here\n",
                       ["raised ModuleNotFoundError: No module named "
                        "'no_such_module_here' (line 1)"]),
    "exits": ("import sys\nsys.exit(7)\n", ["called sys.exit(7) (line 2)"]),
    "returns_none": ("def get_config():\n  return None\n",
                     ["get_config() of the config file", "returned None"]),
    "returns_dict": ("def get_config():\n  return {'seed': 0}\n", ["returned a dict"]),
    "no_get_config": ("x = 1\n", ["defines no get_config()"]),
}


@pytest.mark.parametrize("override", [(), ("--config.num_epochs=2",)],
                         ids=["plain", "override"])
@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_a_config_file_whose_code_fails_is_one_line_naming_it(tmp_path, name, override,
                                                              capsys):
  text, fragments = CONFIG_FILES[name]
  path = tmp_path / f"{name}.py"
  path.write_text(text)
  with pytest.raises(UserError) as e:
    cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "run"),
              *override])
  message = str(e.value)
  assert message.startswith("train: ") and str(path) in message and "\n" not in message
  for fragment in fragments:
    assert fragment in message
  assert capsys.readouterr().err == ""  # not even absl's warning beside it
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_the_library_loader_says_the_same(tmp_path, name):
  text, fragments = CONFIG_FILES[name]
  path = tmp_path / f"{name}.py"
  path.write_text(text)
  with pytest.raises(UserError) as e:
    config_lib.load_config_file(str(path))
  for fragment in fragments:
    assert fragment in str(e.value)


@pytest.mark.parametrize("seeds, message", [
    ("4294967296", "--seeds: seed 4294967296: use a whole number from 0 to 4294967295"),
    ("0,-1", "--seeds: seed -1: use a whole number from 0"),
    ("", "--seeds is empty (--seeds=)"),
])
def test_seeds_take_the_range_of_config_seed(tmp_path, seeds, message):
  with pytest.raises(UserError) as e:
    cli.main(["train", "--config", MLP, "--workdir", str(tmp_path / "w"), f"--seeds={seeds}"])
  assert message in str(e.value)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flag, shown", [
    ("--config.model.hidden_features=None", "config.model.hidden_features = (None,)"),
    ("--config.model.hidden_features=(8,None)", "config.model.hidden_features = (8, None)"),
])
def test_a_field_holding_none_is_refused(tmp_path, flag, shown):
  with pytest.raises(UserError, match=r"holds None: give it a value") as e:
    cli.main(["train", "--config", MLP, "--workdir", str(tmp_path / "w"), flag])
  assert str(e.value).startswith(shown)
  config = config_lib.load_config_file("configs/cnn.py")
  config.model.features = None  # set in code rather than on the command line
  with pytest.raises(UserError, match=r"^config.model.features = None holds None"):
    config_lib.validate(config)


@pytest.mark.parametrize("a, b, shared", [
    ("test", "test", 10_000), ("train[:2000]", "test[:500]", 0),
    ("train[50000:]+test[:100]", "test[50:]", 50), ("train[:10%]", "train[5%:]", 3_000),
    ("train", "test", 0)])
def test_split_overlap_counts_the_images_both_select(a, b, shared):
  assert splits.overlap(a, b) == shared == splits.overlap(b, a)


def test_a_train_split_overlapping_the_test_split_is_refused_unless_meant(tmp_path):
  flags = ["--config.data.train_split=test", "--config.data.test_split=test",
           "--config.data.validation_size=1000", "--config.select=best_val"]
  with pytest.raises(UserError, match=r"train_split = 'test' shares 10,000 images with "
                     r"config.data.test_split = 'test'.*allow_test_overlap=True"):
    cli.main(["train", "--config", MLP, "--workdir", str(tmp_path / "w"), *flags])
  assert not (tmp_path / "w").exists()
  config = config_lib.load_config_file(MLP)
  config.data.update(train_split="train[:100]+test[:10]", test_split="test[5:]")
  with pytest.raises(UserError, match="shares 5 images"):
    splits.validate_splits(config)
  config.data.allow_test_overlap = True
  splits.validate_splits(config)  # meant: accepted


def test_a_model_too_large_for_the_memory_is_refused_before_xla_allocates_it(
    tmp_path, monkeypatch):
  with pytest.raises(UserError, match=r"model mlp: 79,500,000,010 parameters need about "
                     r"1,184.6 GiB to train .* make config.model smaller"):
    cli.main(["train", "--config", MLP, "--workdir", str(tmp_path / "w"),
              "--config.model.hidden_features=(100000000,)"])
  assert not (tmp_path / "w").exists()
  # The bound: adam keeps two moments beside the parameters, and the
  # gradients are a fourth copy (4 x 4 bytes per parameter, times the seeds).
  config = config_lib.load_config_file(MLP)
  need = 101_770 * 4 * 4 + 3 * 4  # + three int32 step counts (state, adam, schedule)
  monkeypatch.setattr(runtime, "device_memory_bytes", lambda: need)
  state_lib.check_fits_in_memory(config)
  with pytest.raises(UserError, match="101,770 parameters"):
    state_lib.check_fits_in_memory(config, copies=2)


def _start(code, **kwargs):
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs)


def test_ctrl_c_while_the_process_exits_is_interrupted_130(tmp_path):
  """JAX and orbax register atexit hooks when imported; a Ctrl-C while they
  run is an interruption too (130), not a KeyboardInterrupt traceback and
  exit 0. A slow hook registered before the command stands for them."""
  proc = _start("""
      import atexit, time
      from mnist_jax import cli
      atexit.register(lambda: (print("in atexit", flush=True), time.sleep(60)))
      cli.run(["help"])
      """)
  for line in proc.stdout:
    if line == "in atexit\n":
      break
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert (proc.returncode, err) == (130, "interrupted\n")


@pytest.mark.slow
@pytest.mark.real_data
def test_ctrl_c_just_after_the_final_line_is_interrupted_or_done(tmp_path, mnist_dir):
  """The real command, interrupted as soon as it has printed its result: it
  either ends as interrupted (130) or had already exited (0), never with a
  traceback."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "mnist_jax", "train", "--config", MLP, "--workdir",
       str(tmp_path / "w"), "--config.num_epochs=1", "--data_dir", mnist_dir,
       "--config.data.train_split=train[:1000]", "--config.data.test_split=test[:500]"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in proc.stdout:
    if line.startswith("final test accuracy"):
      break
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert "Traceback" not in err and "KeyboardInterrupt" not in err
  assert (proc.returncode, err.endswith("interrupted\n")) in ((130, True), (0, False))


@pytest.mark.parametrize("xla_flags, message", [
    ("garbage", "XLA_FLAGS='garbage': 'garbage' is no flag"),
    ("--xla_force_host_platform_device_count=2 --xla_no_such_flag=1",
     "stops XLA (Unknown flag in XLA_FLAGS: --xla_no_such_flag=1)"),
])
def test_xla_flags_that_xla_cannot_parse_are_one_line(tmp_path, monkeypatch, xla_flags,
                                                      message):
  """XLA aborts the process (a fatal log line) when its backend starts; a
  child process asks XLA first, as in a fresh `python -m mnist_jax`."""
  monkeypatch.setenv("XLA_FLAGS", xla_flags)
  monkeypatch.setattr(runtime, "_backends_started", lambda: False)
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
    cli.main(["train", "--config", MLP, "--workdir", str(tmp_path / "w")])
  assert not (tmp_path / "w").exists()
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  runtime.check_xla_flags()  # a flag XLA knows: no error


@pytest.mark.slow
@pytest.mark.parametrize("platforms", ["gpu", "cuda"])
def test_a_platform_that_is_not_here_is_one_line(tmp_path, platforms):
  """JAX_PLATFORMS=gpu on a CPU machine: one line, not JAX's 42-52 line traceback."""
  import jax
  if jax.devices()[0].platform != "cpu":
    pytest.skip("this machine has a GPU")
  result = subprocess.run(
      [sys.executable, "-m", "mnist_jax", "train", "--config", MLP, "--workdir",
       str(tmp_path / "w")], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS=platforms))
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.startswith(f"error: JAX_PLATFORMS={platforms} names a platform "
                                  "JAX cannot start here (")
  assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("argv, default", [
    (["study", "lecun1998", "--quick"], "runs/studies/lecun1998/cpu-quick"),
    (["frontier"], "runs/frontier/cpu")])
def test_an_empty_out_is_refused_rather_than_the_default(tmp_path, monkeypatch, argv,
                                                         default):
  """`--out=` is refused, not taken as the default folder in the checkout."""
  monkeypatch.chdir(tmp_path)
  with pytest.raises(UserError, match=rf"--out is empty \(--out=\).*\({default}\)"):
    cli.main([*argv, "--out="])
  assert os.listdir(tmp_path) == []
