"""M3/M5/M7 (models/simple_cnn.py): parameter counts by hand, batch norm modes, configs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mnist_jax import UserError
from mnist_jax.core.models import build_model
from mnist_jax.core.models.layers import count_params

from configs import m3, m5, m7

MNIST_BATCH = jnp.zeros((2, 28, 28, 1), jnp.float32)
AUGMENT_FIELDS = {"enabled", "rotation_deg", "translate_frac", "scale_min",
                  "scale_max", "elastic_alpha", "elastic_sigma"}


def shapes(model_cfg):
  """Variable shapes without computing anything (the models have up to 2.3M params)."""
  model = build_model(model_cfg)
  return jax.eval_shape(model.init, jax.random.key(0), MNIST_BATCH)


def by_hand(kernel: int, channels, side: int) -> int:
  """k*k*c_in*c_out per conv (no bias), 2*c per batch norm (scale and bias),
  flatten*10 for the dense layer (no bias) and 2*10 for its batch norm."""
  widths = (1,) + tuple(channels)
  conv = sum(kernel * kernel * a * b for a, b in zip(widths, widths[1:]))
  return conv + 2 * sum(channels) + side * side * channels[-1] * 10 + 2 * 10


@pytest.mark.parametrize("config_module,kernel,side,expected", [
    (m3, 3, 8, 1_124_180), (m5, 5, 8, 1_128_180), (m7, 7, 4, 2_291_972)])
def test_parameter_counts_of_m3_m5_m7(config_module, kernel, side, expected):
  cfg = config_module.get_config().model
  variables = shapes(cfg)
  params = variables["params"]
  assert cfg.kernel_size == kernel
  assert build_model(cfg).feature_map_sizes()[-1] == side
  assert params["logits"]["kernel"].shape == (side * side * cfg.channels[-1], 10)
  assert count_params(params) == by_hand(kernel, cfg.channels, side) == expected
  # Bias-free convolutions and dense layer: the batch norm supplies the shift.
  for name, layer in params.items():
    if name.startswith("conv") or name == "logits":
      assert set(layer) == {"kernel"}, name
  # Running mean and variance for every batch norm, not trained parameters.
  assert count_params(variables["batch_stats"]) == 2 * sum(cfg.channels) + 2 * 10


def tiny_model():
  cfg = ml_collections.ConfigDict(dict(name="simple_cnn", kernel_size=5,
                                       channels=(4, 8), num_classes=10))
  model = build_model(cfg)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 28, 28, 1)), jnp.float32)
  return model, model.init(jax.random.key(0), x), x


def test_train_mode_updates_running_stats_eval_mode_uses_them():
  model, variables, x = tiny_model()
  logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (8, 10)
  old, new = variables["batch_stats"]["bn0"], updates["batch_stats"]["bn0"]
  assert not np.allclose(old["mean"], new["mean"])
  # momentum 0.9: new = 0.9 * old + 0.1 * the batch mean of the conv output.
  conv0 = jax.lax.conv_general_dilated(x, variables["params"]["conv0"]["kernel"],
                                       (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * conv0.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  # Eval mode normalises with the running statistics: an image's logits do not
  # depend on the rest of the batch. Train mode normalises with the batch's.
  evaluated = {"params": variables["params"], **updates}
  eval_all = model.apply(evaluated, x, train=False)
  eval_half = model.apply(evaluated, x[:4], train=False)
  np.testing.assert_allclose(eval_all[:4], eval_half, rtol=1e-5, atol=1e-5)
  train_half, _ = model.apply(variables, x[:4], train=True, mutable=["batch_stats"])
  assert not np.allclose(logits[:4], train_half, atol=1e-4)


def test_a_few_adam_steps_with_batch_stats_fit_a_fixed_batch():
  model, variables, x = tiny_model()
  labels = jnp.arange(8) % 10
  tx = optax.adam(1e-2)
  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)

  @jax.jit
  def step(params, stats, opt_state):
    def loss_fn(p):
      logits, upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, upd["batch_stats"]
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  losses = []
  for _ in range(15):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]


def test_a_stack_that_shrinks_the_map_to_nothing_is_rejected():
  cfg = m7.get_config().model
  cfg.channels = (8, 8, 8, 8, 8)  # 28 - 5 * 6 < 1
  with pytest.raises(UserError, match="shrink the 28x28 input to nothing at layer 5"):
    build_model(cfg)


def test_m3_m5_m7_share_one_recipe_and_spell_out_augmentation():
  configs = [m.get_config() for m in (m3, m5, m7)]
  for config in configs:
    assert set(config.augment.keys()) == AUGMENT_FIELDS
    assert config.augment.enabled and config.augment.rotation_deg == 20.0
    assert config.augment.translate_frac == 0.2
    assert (config.batch_size, config.num_epochs) == (120, 150)
    assert config.optimizer.schedule == "exponential"
  recipes = [{k: v for k, v in c.to_dict().items() if k != "model"} for c in configs]
  assert recipes[0] == recipes[1] == recipes[2]


def test_a_restored_batch_norm_model_predicts_with_its_running_stats():
  from mnist_jax.inference import trained
  model, variables, _ = tiny_model()
  images = np.random.default_rng(1).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
  run = trained.TrainedModel(ml_collections.ConfigDict({"eval_batch_size": 4}), model,
                             variables["params"], variables["batch_stats"])
  expected = jax.nn.softmax(model.apply(variables, images / 255.0, train=False))
  np.testing.assert_allclose(run.probabilities(images), expected, rtol=1e-4, atol=1e-6)
  shifted = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])
  other = trained.TrainedModel(run.config, model, run.params, shifted)
  assert not np.allclose(other.probabilities(images), expected, atol=1e-3)
