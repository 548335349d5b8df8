"""Model shapes, parameter counts on the real 28x28x1 input, and config checks."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cpu_ops import max_of_views, max_pool
from mnist_jax.core.models.layers import count_params, pool

from configs import cnn as cnn_config, mlp as mlp_config

MNIST_BATCH = jnp.zeros((4, 28, 28, 1), jnp.float32)


def init(model_cfg):
  model = build_model(model_cfg)
  params = model.init(jax.random.key(0), MNIST_BATCH)["params"]
  return model, params


def test_mlp_is_the_articles_101770_parameters():
  model, params = init(mlp_config.get_config().model)
  # 784*128 + 128 = 100,480 (hidden) and 128*10 + 10 = 1,290 (output).
  assert params["Dense_0"]["kernel"].shape == (784, 128)
  assert count_params(params["Dense_0"]) == 100_480
  assert count_params(params["Dense_1"]) == 1_290
  assert count_params(params) == 101_770
  assert model.apply({"params": params}, MNIST_BATCH).shape == (4, 10)


def test_default_cnn_parameter_count_and_shapes():
  model, params = init(cnn_config.get_config().model)
  per_layer = {name: count_params(p) for name, p in params.items()}
  # conv: k*k*c_in*c_out + c_out; after three 2x2 pools the map is 3x3x128.
  assert per_layer == {"conv0": 3 * 3 * 1 * 32 + 32, "conv1": 3 * 3 * 32 * 64 + 64,
                       "conv2": 3 * 3 * 64 * 128 + 128,
                       "dense0": 3 * 3 * 128 * 128 + 128, "logits": 128 * 10 + 10}
  assert count_params(params) == 241_546
  assert model.apply({"params": params}, MNIST_BATCH).shape == (4, 10)


def test_flatten_size_follows_kernel_stride_and_pooling():
  cfg = cnn_config.get_config().model
  cfg.strides = (2, 1, 1)
  cfg.pooling = ("none", "max", "max")
  # 28 -> stride 2 -> 14 -> 14 -> pool 7 -> 7 -> pool 3
  assert build_model(cfg).feature_map_sizes() == [14, 7, 3]
  _, params = init(cfg)
  assert params["dense0"]["kernel"].shape == (3 * 3 * 128, 128)


def test_valid_padding_shrinks_each_map_by_the_kernel_less_one():
  cfg = cnn_config.get_config().model
  cfg.update(features=(24, 32), kernel_sizes=(5, 3), strides=(1, 1),
             activations=("relu", "relu"), pooling=("max", "max"),
             dense_features=(256,), padding="valid")
  # 28 -> 5x5 valid 24 -> pool 12 -> 3x3 valid 10 -> pool 5: 5*5*32 = 800 inputs.
  assert build_model(cfg).feature_map_sizes() == [12, 5]
  model, params = init(cfg)
  assert params["conv0"]["kernel"].shape == (5, 5, 1, 24)
  assert params["dense0"]["kernel"].shape == (800, 256)
  assert count_params(params) == (25 * 24 + 24) + (9 * 24 * 32 + 32) + (800 * 256 + 256) \
      + (256 * 10 + 10)
  assert model.apply({"params": params}, MNIST_BATCH).shape == (4, 10)


def speedrun_like(**changes):
  cfg = cnn_config.get_config().model
  cfg.update(features=(8, 16), kernel_sizes=(5, 3), strides=(1, 1),
             activations=("relu", "relu"), pooling=("max", "max"),
             dense_features=(32,), padding="valid", dropout_rate=0.0, **changes)
  return cfg


def test_pool_before_norm_without_batch_norm_is_the_same_function():
  """Max pooling and ReLU commute, so without batch norm the order changes no
  value: the same logits, bit for bit, from the same parameters."""
  images = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  model, params = init(speedrun_like())
  reordered = build_model(speedrun_like(pool_before_norm=True))
  np.testing.assert_array_equal(model.apply({"params": params}, images),
                                reordered.apply({"params": params}, images))


def test_relu_and_max_pooling_stages_pool_first_with_the_same_gradients(monkeypatch):
  """Without batch norm, the default CNN pools before its ReLUs (a quarter of
  the values): loss and every gradient equal the norm-then-pool order's, bit
  for bit, here on a batch where many pooling windows hold no positive value."""
  images = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1))
  labels = jax.random.randint(jax.random.key(2), (16,), 0, 10)
  cfg = cnn_config.get_config().model
  model, params = init(cfg)
  assert [model.pools_first(s.activation, s.pooling) for s in model.stages()] == [True] * 3

  def loss_and_grads():
    def loss(p):
      logits = build_model(cfg).apply({"params": p}, images, train=True,
                                      rngs={"dropout": jax.random.key(3)})
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                           labels[:, None], 1))
    return jax.jit(jax.value_and_grad(loss))(params)

  pooled_first = loss_and_grads()
  monkeypatch.setattr(type(model), "pools_first",
                      lambda self, act, kind: self.pool_before_norm)
  activated_first = loss_and_grads()
  for ours, theirs in zip(jax.tree.leaves(pooled_first), jax.tree.leaves(activated_first)):
    np.testing.assert_array_equal(ours, theirs)


def test_only_stages_where_the_order_changes_nothing_pool_first():
  cfg = cnn_config.get_config().model
  model = build_model(cfg)
  assert not model.pools_first("tanh", "max") and not model.pools_first("relu", "avg")
  cfg.batch_norm = True
  assert not build_model(cfg).pools_first("relu", "max")
  cfg.pool_before_norm = True
  assert build_model(cfg).pools_first("tanh", "avg")


def test_pool_before_norm_normalises_the_pooled_map():
  """With batch norm, each stage is conv -> 2x2 max pool -> norm -> ReLU: the
  first norm's batch statistics are those of the pooled 12x12 map."""
  images = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  cfg = speedrun_like(batch_norm=True, pool_before_norm=True)
  model = build_model(cfg)
  variables = model.init(jax.random.key(0), images)
  _, updated = model.apply(variables, images, train=True, mutable=["batch_stats"])
  conv0 = variables["params"]["conv0"]
  maps = jax.lax.conv_general_dilated(images, conv0["kernel"], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pooled = max_of_views(maps + conv0["bias"], 2)
  assert pooled.shape == (4, 12, 12, 8)
  momentum = 0.9  # layers.batch_norm: running = 0.9 * running + 0.1 * batch, from 0
  np.testing.assert_allclose(updated["batch_stats"]["bn0"]["mean"],
                             (1 - momentum) * pooled.mean(axis=(0, 1, 2)), rtol=1e-4,
                             atol=1e-7)
  # In training (batch statistics) the two orders are different functions.
  default_order = build_model(speedrun_like(batch_norm=True))
  train_logits = lambda m: m.apply(variables, images, train=True, mutable=["batch_stats"])[0]
  assert not np.allclose(train_logits(model), train_logits(default_order), atol=1e-3)


def test_configs_saved_before_pool_before_norm_keep_the_old_order():
  saved = speedrun_like(batch_norm=True).to_dict()
  del saved["pool_before_norm"]  # as in a config.json written before the key
  cfg = ml_collections.ConfigDict(saved)
  assert build_model(cfg).pool_before_norm is False


def test_valid_kernel_larger_than_the_map_and_unknown_padding_are_rejected():
  cfg = cnn_config.get_config().model
  cfg.update(kernel_sizes=(5, 5, 5), padding="valid")  # 28 -> 24 -> 12 -> 8 -> 4 -> 0
  with pytest.raises(UserError, match=r"stage 3: a 5x5 'valid' convolution does not fit "
                                      r"the 4x4 feature map"):
    build_model(cfg)
  cfg.padding = "reflect"
  with pytest.raises(UserError, match="config.model.padding = 'reflect'.*same, valid"):
    build_model(cfg)


@pytest.mark.parametrize("strides,pooling", [((3, 3, 3), ("max", "max", "max")),
                                             ((2, 2, 2), ("max", "max", "max"))])
def test_config_that_shrinks_the_map_to_nothing_is_rejected(strides, pooling):
  cfg = cnn_config.get_config().model
  cfg.strides, cfg.pooling = strides, pooling
  with pytest.raises(UserError, match=r"stage \d: .*leaves nothing.*smaller strides"):
    build_model(cfg)


def test_mismatched_stage_lists_and_unknown_names_are_rejected():
  cfg = cnn_config.get_config().model
  cfg.kernel_sizes = (3, 3)
  with pytest.raises(UserError, match="one entry per stage"):
    build_model(cfg)
  cfg = cnn_config.get_config().model
  cfg.pooling = ("max", "median", "max")
  with pytest.raises(UserError, match="unknown pooling 'median'"):
    build_model(cfg)
  with pytest.raises(UserError, match="unknown model 'resnet'.*cnn, lenet5, mlp"):
    build_model(ml_collections.ConfigDict({"name": "resnet"}))


@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("size", [pytest.param(28, marks=pytest.mark.slow), 14, 7])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_fast_pooling_matches_flax_pooling_and_its_gradient(kind, size, window):
  """The fast pooling must be the same function as nn.max_pool / nn.avg_pool."""
  x = jax.random.normal(jax.random.key(1), (3, size, size, 5))
  reference = {"max": nn.max_pool, "avg": nn.avg_pool}[kind]

  def ours(x):
    return pool(x, kind, window)

  def theirs(x):
    return reference(x, (window, window), strides=(window, window), padding="VALID")

  np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6)
  weights = jax.random.normal(jax.random.key(2), theirs(x).shape)
  g_ours = jax.grad(lambda x: jnp.sum(ours(x) * weights))(x)
  g_theirs = jax.grad(lambda x: jnp.sum(theirs(x) * weights))(x)
  np.testing.assert_allclose(g_ours, g_theirs, rtol=1e-6)


def bits(x):
  return np.asarray(x).view(np.int32)


# The ragged 7x7 map with a window of 3 in `make test`, the others in the slow tier.
@pytest.mark.parametrize("size,window", [
    pytest.param(28, 2, marks=pytest.mark.slow), pytest.param(28, 3, marks=pytest.mark.slow),
    pytest.param(7, 2, marks=pytest.mark.slow), (7, 3)])
def test_max_pool_has_the_straightforward_gradient_bit_for_bit(size, window):
  """`max_pool`'s hand-written gradient against JAX's gradient of the strided
  views, including ties (a constant band, as a background of equal ReLU
  outputs), ReLU zeros, a ragged edge (7 pixels) and negative cotangents."""
  x = jax.random.normal(jax.random.key(1), (4, size, size, 5))
  x = x.at[:, :size // 2].set(0.3)  # ties between positive values
  out = (size // window, size // window)
  weights = jax.random.normal(jax.random.key(2), (4, *out, 5))

  def loss(fn, x):
    return jnp.sum(fn(jax.nn.relu(x - 0.2), window) * weights)

  assert np.array_equal(bits(max_pool(x, window)), bits(max_of_views(x, window)))
  g_ours = jax.jit(jax.grad(functools.partial(loss, max_pool)))(x)
  g_straight = jax.jit(jax.grad(functools.partial(loss, max_of_views)))(x)
  assert np.array_equal(bits(g_ours), bits(g_straight))
  assert np.any(np.asarray(g_ours)[:, :size // 2] != 0)  # the ties got gradient
  seeds = jax.vmap(jax.grad(functools.partial(loss, max_pool)))(jnp.stack([x, -x]))
  assert np.array_equal(bits(seeds[0]), bits(g_straight))
