"""config.model is the model's attributes: one value applies to every stage,
comma lists work on the command line, unknown keys and names are one error."""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.cli import command, runs
from mnist_jax.core import config as config_lib
from mnist_jax.core.models import build_model

from configs import cnn as cnn_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = next(c for c in runs.COMMANDS if c.name == "train")


def parsed_model(*overrides):
  """config.model as `train --config configs/cnn.py OVERRIDES` parses it."""
  fv, _ = command.parse(TRAIN, ["--config", str(REPO / "configs" / "cnn.py"),
                                "--workdir", "unused", *overrides])
  return fv.config.model


def test_one_value_applies_to_every_stage():
  cfg = cnn_config.get_config().model
  cfg.update(activations=("gelu",), kernel_sizes=(5,), features=(4, 8, 8),
             dense_features=(8,), conv_impl="xla")
  stages = build_model(cfg).stages()
  assert [(s.activation, s.kernel_size, s.features) for s in stages] == [
      ("gelu", 5, 4), ("gelu", 5, 8), ("gelu", 5, 8)]
  written_out = cnn_config.get_config().model
  written_out.update(activations=("gelu",) * 3, kernel_sizes=(5, 5, 5), features=(4, 8, 8),
                     dense_features=(8,), conv_impl="xla")
  images = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  init = jax.jit(build_model(written_out).init)
  variables = init(jax.random.key(1), images)
  np.testing.assert_array_equal(jax.jit(build_model(cfg).apply)(variables, images),
                                jax.jit(build_model(written_out).apply)(variables, images))


@pytest.mark.parametrize("given,expected", [
    ("gelu", ("gelu",)), ("gelu,gelu,gelu", ("gelu", "gelu", "gelu")),
    ("(relu, tanh, elu)", ("relu", "tanh", "elu")), ("('relu','tanh','elu')", ("relu", "tanh", "elu"))])
def test_activations_on_the_command_line(given, expected):
  model = parsed_model(f"--config.model.activations={given}")
  assert model.activations == expected
  assert [s.activation for s in build_model(model).stages()] == [
      expected[i] if len(expected) > 1 else expected[0] for i in range(3)]


def test_features_alone_set_the_number_of_stages_when_the_rest_are_single():
  model = parsed_model("--config.model.features=16,32", "--config.model.kernel_sizes=3",
                       "--config.model.strides=1", "--config.model.activations=relu",
                       "--config.model.pooling=max")
  assert model.features == (16, 32)
  cnn = build_model(model)
  assert len(cnn.stages()) == 2 and cnn.feature_map_sizes() == [14, 7]
  params = jax.eval_shape(cnn.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  assert sorted(k for k in params if k.startswith("conv")) == ["conv0", "conv1"]


def test_lists_of_different_lengths_are_one_clear_error():
  model = parsed_model("--config.model.features=16,32")  # three of everything else
  with pytest.raises(UserError, match=r"different lengths .*'features': 2.*one entry "
                                      r"for every stage"):
    build_model(model)


def test_text_overrides_split_comma_lists_too():
  config = cnn_config.get_config()
  config_lib.apply_overrides(config, {"model.activations": "(relu, tanh, elu)",
                                      "model.pooling": "max,avg,none"})
  assert config.model.activations == ("relu", "tanh", "elu")
  assert config.model.pooling == ("max", "avg", "none")


def test_a_key_the_model_lacks_is_one_clear_error():
  cfg = cnn_config.get_config().model
  cfg.hidden_features = (8,)  # an MLP attribute
  with pytest.raises(UserError, match=r"config.model.hidden_features: model 'cnn' \(CNN\) "
                                      r"has no such attribute; its attributes are features"):
    build_model(cfg)


def test_a_config_json_of_lists_builds_the_same_module():
  cfg = cnn_config.get_config().model
  as_saved = ml_collections.ConfigDict({k: list(v) if isinstance(v, tuple) else v
                                        for k, v in cfg.items()})
  assert build_model(as_saved) == build_model(cfg)


MY_MODELS = '''
import flax.linen as nn
from mnist_jax import UserError


class Tiny(nn.Module):
  width: int = 8
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(x)

  def validate(self):
    if self.width < 1:
      raise UserError(f"config.model.width = {self.width}: use 1 or more.")


NOT_A_MODULE = 3
'''


@pytest.mark.parametrize("name,width,message", [
    ("my_models_a:Tiny", 0, "config.model.width = 0: use 1 or more."),
    ("no_such_module_here:Tiny", 8, "cannot import 'no_such_module_here'"),
    ("my_models_a:Huge", 8, "my_models_a has no flax.linen Module named 'Huge'"),
    ("my_models_a:NOT_A_MODULE", 8, "no flax.linen Module named 'NOT_A_MODULE'")])
def test_a_users_module_from_the_working_directory(tmp_path, monkeypatch, name, width,
                                                    message):
  (tmp_path / "my_models_a.py").write_text(MY_MODELS)
  monkeypatch.chdir(tmp_path)
  monkeypatch.delitem(__import__("sys").modules, "my_models_a", raising=False)
  cfg = ml_collections.ConfigDict({"name": name, "width": width})
  with pytest.raises(UserError, match=message):
    build_model(cfg)
  cfg.width = 8
  if name == "my_models_a:Tiny":
    model = build_model(cfg)
    assert (model.width, model.num_classes) == (8, 10)
