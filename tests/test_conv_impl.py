"""Every conv_impl is the same function as flax's nn.Conv, with the same params."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cpu_ops import (CONV_IMPLS, resolve_conv_impl, taps_conv,
                                           xla_chunked_conv, xla_conv)
from mnist_jax.core.models.layers import Conv

from configs import cnn as cnn_config


def _assert_trees_close(a, b, rtol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    scale = float(jnp.max(jnp.abs(y))) or 1.0
    np.testing.assert_allclose(x, y, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("size,channels,kernel,stride,padding",
                         [(28, 1, 3, 1, "SAME"), (9, 4, 3, 2, "SAME"), (7, 3, 5, 1, "SAME"),
                          (8, 2, 2, 3, "SAME"), (28, 1, 5, 1, "VALID"),
                          (12, 24, 3, 1, "VALID"), (9, 4, 3, 2, "VALID")])
def test_conv_matches_nn_conv_outputs_and_gradients(impl, size, channels, kernel,
                                                    stride, padding):
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  ours = Conv(6, kernel, stride, impl=impl, padding=padding)
  theirs = nn.Conv(6, (kernel, kernel), strides=(stride, stride), padding=padding)
  params = theirs.init(jax.random.key(1), x)["params"]
  ours_params = ours.init(jax.random.key(1), x)["params"]
  # Same names, shapes and initial values: seeds and checkpoints carry over.
  _assert_trees_close(ours_params, params, 0.0)
  params = {"kernel": params["kernel"],
            "bias": jax.random.normal(jax.random.key(3), params["bias"].shape)}
  y_ours = ours.apply({"params": params}, x)
  y_theirs = theirs.apply({"params": params}, x)
  _assert_trees_close(y_ours, y_theirs, 1e-5)
  weights = jax.random.normal(jax.random.key(2), y_theirs.shape)

  def grads(module):
    loss = lambda p, x: jnp.sum(module.apply({"params": p}, x) * weights)
    return jax.grad(loss, argnums=(0, 1))(params, x)

  _assert_trees_close(grads(ours), grads(theirs), 1e-5)


def test_chunked_kernel_gradient_sums_every_image_of_a_ragged_batch():
  # 20 images = two full chunks of KERNEL_GRAD_CHUNK (8) and a ragged one of 4.
  x = jax.random.normal(jax.random.key(0), (20, 14, 14, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
  weights = jax.random.normal(jax.random.key(2), (20, 14, 14, 5))
  loss = lambda conv: lambda x, k: jnp.sum(conv(x, k, 1) * weights)
  ours = jax.grad(loss(xla_chunked_conv), argnums=(0, 1))(x, kernel)
  theirs = jax.grad(loss(xla_conv), argnums=(0, 1))(x, kernel)
  _assert_trees_close(ours, theirs, 1e-5)
  # Dropping the last chunk would change the kernel gradient by this much:
  partial = jax.grad(loss(xla_conv), argnums=1)(x.at[16:].set(0.0), kernel)
  assert float(jnp.max(jnp.abs(partial - theirs[1]))) > 1e-2


@pytest.mark.parametrize("kernel,padding", [(3, "SAME"), (5, "VALID")])
def test_taps_conv_trains_as_xla_chunked_bit_for_bit(kernel, padding):
  """The sum over taps serves evaluation only; differentiated, the program is
  xla_chunked's, so training with the first layer's `auto` changes no bit."""
  x = jax.random.uniform(jax.random.key(0), (16, 28, 28, 1))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 8))
  weights = jax.random.normal(jax.random.key(2), xla_conv(x, k, 1, padding).shape)
  loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k, 1, padding)) * weights)
  ours = jax.jit(jax.value_and_grad(loss(taps_conv), argnums=(0, 1)))(x, k)
  theirs = jax.jit(jax.value_and_grad(loss(xla_chunked_conv), argnums=(0, 1)))(x, k)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  # Not differentiated, it is the sum over taps: the same values, other rounding.
  value = jax.jit(lambda x, k: taps_conv(x, k, 1, padding))(x, k)
  _assert_trees_close(value, xla_conv(x, k, 1, padding), 1e-6)
  assert "convolution" not in jax.jit(
      lambda x, k: taps_conv(x, k, 1, padding)).lower(x, k).as_text()


def test_auto_is_taps_for_one_input_channel_on_the_cpu():
  assert jax.default_backend() == "cpu"
  assert [resolve_conv_impl("auto", c) for c in (1, 2, 32)] == [
      "taps", "xla_chunked", "xla_chunked"]
  assert resolve_conv_impl("xla", 1) == "xla"


def test_vmapped_chunked_conv_runs_one_plain_convolution_per_member():
  """vmap over kernels must not become a grouped convolution (slow on XLA:CPU)."""
  x = jnp.ones((3, 8, 6, 6, 2))
  kernel = jnp.ones((3, 3, 3, 2, 4))
  group_counts = lambda conv: set(re.findall(
      r"_group_count = (\d+)", jax.jit(jax.vmap(jax.grad(
          lambda x, k: jnp.sum(conv(x, k, 1) ** 2), argnums=(0, 1)))).lower(
              x, kernel).as_text()))
  assert group_counts(xla_conv) != {"1"}  # what plain vmap does
  assert group_counts(xla_chunked_conv) == {"1"}


def test_default_cnn_gives_the_same_logits_and_gradients_with_every_impl():
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  results = []
  for impl in CONV_IMPLS:
    cfg = cnn_config.get_config().model
    cfg.conv_impl = impl
    model = build_model(cfg)
    params = model.init(jax.random.key(0), x)["params"]
    loss = lambda p: jnp.sum(jax.nn.log_softmax(model.apply({"params": p}, x))[:, 3])
    results.append((params, model.apply({"params": params}, x), jax.grad(loss)(params)))
  for params, logits, grads in results[1:]:
    _assert_trees_close(params, results[0][0], 0.0)
    _assert_trees_close(logits, results[0][1], 1e-5)
    _assert_trees_close(grads, results[0][2], 1e-4)


def test_unknown_conv_impl_is_rejected():
  cfg = cnn_config.get_config().model
  cfg.conv_impl = "winograd"
  with pytest.raises(UserError, match="conv_impl = 'winograd'.*xla, im2col, xla_chunked, taps"):
    build_model(cfg)
