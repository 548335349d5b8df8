"""A user's own model, `model.name = "my_models:TinyResNet"`, from a folder
outside the package: every command that runs a model takes it by that name."""

import json
import pathlib
import sys

import pytest

from helpers import one_error_line

REPO = pathlib.Path(__file__).resolve().parents[1]

MY_MODELS = '''\
"""A user's models: a residual block between two convolutions."""

import flax.linen as nn
from mnist_jax import UserError


class TinyResNet(nn.Module):
  width: int = 4
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2), name="conv0")(x))
    x = x + nn.relu(nn.Conv(self.width, (3, 3), name="conv1")(x))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

  def validate(self):
    if self.width < 1:
      raise UserError(f"config.model.width = {self.width}: use 1 or more.")
'''

MY_CONFIG = '''\
from mnist_jax.core.config import base_config


def get_config():
  config = base_config()
  config.model = dict(name="my_models:TinyResNet", width=4)
  config.num_epochs = 1
  config.data.train_split = "train[:512]"
  config.data.test_split = "test[:256]"
  config.checkpoint.every_steps = 0
  config.log_misclassified = 0
  return config
'''

MY_STUDY = '''\
"""Study 9: the user's TinyResNet, 2 against 4 channels."""

import os

from mnist_jax.studies.spec import Point, Preset, Study

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "my_config.py")
STUDY = Study("tiny", [Point("w2", CONFIG, {"model.width": 2}, label="TinyResNet 2"),
                       Point("w4", CONFIG, {"model.width": 4}, label="TinyResNet 4")],
              title="9. TinyResNet")
PRESETS = {"cpu": Preset(seeds=range(1), overrides={"num_epochs": 1})}
'''


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
  """A working directory outside the checkout with my_models.py, my_config.py
  and a study of the model in experiments/."""
  (tmp_path / "my_models.py").write_text(MY_MODELS)
  (tmp_path / "my_config.py").write_text(MY_CONFIG)
  (tmp_path / "experiments").mkdir()
  (tmp_path / "experiments" / "tiny.py").write_text(MY_STUDY)
  monkeypatch.delitem(sys.modules, "my_models", raising=False)
  yield tmp_path
  sys.modules.pop("my_models", None)  # the next test imports its own


@pytest.mark.slow
@pytest.mark.real_data
def test_a_users_model_runs_through_every_command(cli_here, mnist_dir, user_folder,
                                                    monkeypatch):
  cli = cli_here  # its fixture's working directory is the checkout: move to the user's
  monkeypatch.chdir(user_folder)
  data = ["--data_dir", mnist_dir]
  trained = cli("train", "--config", "my_config.py", "--workdir", "runs/tiny",
                "--seeds", "0,1", *data)
  assert trained.returncode == 0, trained.stderr
  saved = json.loads((user_folder / "runs/tiny/seed0/config.json").read_text())
  assert saved["model"] == {"name": "my_models:TinyResNet", "width": 4}
  run = "runs/tiny/seed0"
  evaluated = cli("evaluate", "--workdir", run, *data)
  assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout, evaluated.stderr
  predicted = cli("predict", "--workdir", run, "--json", REPO / "examples" / "digits")
  assert predicted.returncode == 0, predicted.stderr
  assert len(json.loads(predicted.stdout)) == len(list((REPO / "examples/digits").iterdir()))
  plotted = cli("plot", "--workdir", run, *data)
  assert plotted.returncode == 0, plotted.stderr
  assert (user_folder / run / "figures" / "conv_kernels.png").is_file()
  ensembled = cli("ensemble", "--workdirs", "runs/tiny/seed0,runs/tiny/seed1",
                  "--out", "ens", *data)
  assert ensembled.returncode == 0, ensembled.stderr
  studied = cli("study", "tiny", "--preset", "cpu", "--out", "study", *data)
  assert studied.returncode == 0, studied.stderr
  assert {p.name for p in (user_folder / "study").glob("w*")} == {"w2", "w4"}
  assert "TinyResNet 2" in (user_folder / "study" / "tables" / "tiny.md").read_text()


@pytest.mark.parametrize("name,fragment", [
    ("my_models:TinyResNet --config.model.width=0", "config.model.width = 0: use 1"),
    ("not_my_models:TinyResNet", "cannot import 'not_my_models'"),
    ("my_models:HugeResNet", "my_models has no flax.linen Module named 'HugeResNet'"),
    ("mlp", "config.model.width: model 'mlp' (MLP) has no such attribute")])
def test_a_bad_model_name_or_attribute_is_one_error_line(cli_here, user_folder,
                                                         monkeypatch, name, fragment):
  monkeypatch.chdir(user_folder)
  name, *more = name.split()
  result = cli_here("train", "--config", "my_config.py", "--workdir", "runs/bad",
                    f"--config.model.name={name}", *more)
  one_error_line(result, fragment)
  assert not (user_folder / "runs" / "bad" / "config.json").exists()
