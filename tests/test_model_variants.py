"""Locally connected CNN, LeNet-5, cost counting, and the test-set transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.inference import robustness
from mnist_jax.core.data import Split
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cost import layer_costs, model_cost, sharing_rows
from mnist_jax.core.models.layers import count_params

from configs import cnn as cnn_config, lenet5 as lenet5_config, mlp as mlp_config

BATCH = jnp.zeros((2, 28, 28, 1), jnp.float32)


def params_of(model_cfg):
  """Parameter shapes only (eval_shape): the local CNN has 7.6M parameters."""
  model = build_model(model_cfg)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), BATCH))["params"]


def test_locally_connected_cnn_has_the_conv_shapes_without_sharing():
  cfg = cnn_config.get_config().model
  cfg.conv_type = "local"
  params = params_of(cfg)
  rows = sharing_rows(cfg)
  for row in rows:  # the analytic per-layer count is what nn.ConvLocal builds
    assert count_params(params[row["layer"]]) == row["local"]
    h, w, c = row["output"]
    assert params[row["layer"]]["bias"].shape == (h, w, c)
  # The head sees the same flattened map as the shared-weight CNN.
  assert params["dense0"]["kernel"].shape == params_of(cnn_config.get_config().model)[
      "dense0"]["kernel"].shape
  out = jax.eval_shape(lambda: build_model(cfg).init_with_output(
      jax.random.key(0), BATCH)[0])
  assert out.shape == (2, 10)
  # By hand, conv0 (28x28x1 -> 28x28x32, 3x3): shared, per position, and a
  # dense layer from the 784 inputs (plus a bias) to the 25,088 outputs.
  assert {k: rows[0][k] for k in ("conv", "local", "dense")} == {
      "conv": 320, "local": 784 * 320, "dense": 785 * 25_088}


def test_unknown_conv_type_is_rejected():
  cfg = cnn_config.get_config().model
  cfg.conv_type = "dilated"
  with pytest.raises(UserError, match="conv_type = 'dilated'.*conv, local"):
    build_model(cfg)


def test_lenet5_shapes_and_61706_parameters():
  params = params_of(lenet5_config.get_config().model)
  assert params["c3"]["kernel"].shape == (5, 5, 6, 16)
  assert params["c5"]["kernel"].shape == (5 * 5 * 16, 120)  # 28 -> 14 -> 10 -> 5
  assert count_params(params) == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706


def test_layer_costs_match_hand_counts():
  cnn = cnn_config.get_config().model
  costs = {c.name: c for c in layer_costs(cnn)}
  assert costs["conv1"].output_shape == (14, 14, 64)
  assert costs["conv1"].macs == 14 * 14 * 3 * 3 * 32 * 64  # kernel reused per position
  assert costs["dense0"].macs == 3 * 3 * 128 * 128


# Whole-model multiply-adds per image, by hand: a dense layer n_in * n_out, a
# convolution h_out * w_out * k * k * c_in * c_out (biases not counted).
MLP_MACS = 784 * 128 + 128 * 10  # 101,632
LENET5_MACS = (28 * 28 * 5 * 5 * 1 * 6  # c1 'SAME': 117,600
               + 10 * 10 * 5 * 5 * 6 * 16  # c3 'VALID' on 14x14: 240,000
               + 5 * 5 * 16 * 120 + 120 * 84 + 84 * 10)  # c5, f6, logits: 416,520
CNN_MACS = (28 * 28 * 9 * 1 * 32 + 14 * 14 * 9 * 32 * 64 + 7 * 7 * 9 * 64 * 128
            + 3 * 3 * 128 * 128 + 128 * 10)  # 7,599,872
# The locally connected CNN: per position its own 3x3 kernel and bias.
LOCAL_PARAMS = (28 * 28 * (9 * 1 * 32 + 32) + 14 * 14 * (9 * 32 * 64 + 64)
                + 7 * 7 * (9 * 64 * 128 + 128)
                + 1152 * 128 + 128 + 128 * 10 + 10)  # dense0, logits: 7,643,914 in all


def local_cnn():
  cfg = cnn_config.get_config().model
  cfg.conv_type = "local"
  return cfg


@pytest.mark.parametrize("make_cfg,params,macs", [
    (lambda: mlp_config.get_config().model, 101_770, MLP_MACS),
    (lambda: lenet5_config.get_config().model, 61_706, LENET5_MACS),
    (lambda: cnn_config.get_config().model, 241_546, CNN_MACS),
    # No sharing: each weight is used once, so the same multiply-adds.
    (local_cnn, LOCAL_PARAMS, CNN_MACS)])
def test_whole_model_cost_is_the_hand_count(make_cfg, params, macs):
  assert model_cost(make_cfg()) == {"num_params": params, "macs_per_image": macs}


def test_shift_moves_pixels_and_fills_with_zeros():
  images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5, 1) + 1
  right = robustness.shift(images, 0, 2)
  np.testing.assert_array_equal(right[:, :, 2:], images[:, :, :3])
  assert not right[:, :, :2].any()
  up = robustness.shift(images, -1, 0)
  np.testing.assert_array_equal(up[:, :3], images[:, 1:])
  assert not up[:, 3].any()
  assert not robustness.shift(images, 0, 5).any()


def test_rotation_by_90_degrees_turns_a_bar():
  bar = np.zeros((1, 28, 28, 1), np.uint8)
  bar[0, 13:15, 4:24] = 255  # horizontal
  turned = robustness.rotate(bar, 90)
  assert turned[0, 4:24, 13:15].mean() > 200 and turned[0, 13:15, :4].max() == 0
  assert robustness.rotate(bar, 0) is bar


def test_robustness_curves_average_the_four_directions():
  test = Split(np.ones((3, 28, 28, 1), np.uint8), np.zeros(3, np.int32))
  seen = []

  def accuracy(images):
    seen.append(images)
    return float(len(seen))

  result = robustness.curves(accuracy, test, shifts=[0, 2], angles=[10])
  assert result["shift_accuracy"] == [1.0, np.mean([2, 3, 4, 5])]
  assert result["rotation_accuracy"] == [6.0] and len(seen) == 6
