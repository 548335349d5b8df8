"""What a model costs: parameters and multiply-adds per image, layer by layer.

Multiply-adds (MACs) are counted analytically from each weight layer's kernel
and output shapes, found by tracing `init` abstractly (no computation):
  Dense, ConvLocal: every kernel weight is used once per image -> kernel.size;
  Conv: the kernel is reused at every output position -> positions * kernel.size.
Biases, activations, pooling and the softmax are not counted, and 'SAME'
padding zeros are (the usual convention; 'VALID' has none). One FLOP is about two MACs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mnist_jax.core.data import IMAGE_SHAPE
from mnist_jax.core.models import build_model, layers
from mnist_jax.core.models.cnn import INPUT_SIZE
from mnist_jax.core.models.cpu_ops import conv_output_size


@dataclasses.dataclass(frozen=True)
class LayerCost:
  name: str
  kind: str  # Dense | Conv | ConvLocal
  output_shape: tuple  # per image, e.g. (28, 28, 32)
  params: int
  macs: int


def _layer_cost(module: nn.Module, out) -> LayerCost:
  kernel = module.get_variable("params", "kernel")
  bias = module.get_variable("params", "bias")
  bias_size = 0 if bias is None else math.prod(bias.shape)
  kernel_size = math.prod(kernel.shape)
  out_shape = tuple(out.shape[1:])
  reuse = math.prod(out_shape[:-1]) if type(module) in layers.SHARED_CONVS else 1
  return LayerCost(module.name, type(module).__name__, out_shape,
                   kernel_size + bias_size, reuse * kernel_size)


def _trace_init(model_config: ml_collections.ConfigDict):
  """(abstract variables, cost of each Dense / Conv / ConvLocal layer in call
  order) from one abstract trace of `init`."""
  model = build_model(model_config)
  costs = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if (context.method_name == "__call__"
        and type(context.module) in (nn.Dense,) + layers.CONV_MODULES):
      costs.append(_layer_cost(context.module, out))
    return out

  dummy = jnp.zeros((1,) + IMAGE_SHAPE, jnp.float32)
  with nn.intercept_methods(record):
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False))
  return variables, costs


def layer_costs(model_config: ml_collections.ConfigDict) -> List[LayerCost]:
  """Cost of each Dense / Conv / ConvLocal layer of the model, in call order."""
  return _trace_init(model_config)[1]


def model_cost(model_config: ml_collections.ConfigDict) -> Dict[str, int]:
  """{'num_params': every trainable parameter (batch norm's scale and bias
  too), 'macs_per_image': summed over the weight layers}."""
  variables, costs = _trace_init(model_config)
  return {"num_params": layers.count_params(variables["params"]),
          "macs_per_image": sum(c.macs for c in costs)}


def sharing_rows(cnn_config: ml_collections.ConfigDict) -> List[Dict]:
  """Per conv stage of a CNN config: parameters of the conv layer against a
  locally connected layer (same receptive fields, no sharing) and a fully
  connected layer with the same input and output shapes. Analytic:
    conv  = k*k*c_in*c_out + c_out
    local = h_out*w_out*(k*k*c_in*c_out + c_out)   (nn.ConvLocal: bias per position)
    dense = (h_in*w_in*c_in)*(h_out*w_out*c_out) + h_out*w_out*c_out
  """
  rows, n_in, c_in = [], INPUT_SIZE, IMAGE_SHAPE[-1]
  cnn = build_model(cnn_config)
  pooled, padding = cnn.feature_map_sizes(), cnn.padding.upper()
  for i, (c_out, k, s, _, _) in enumerate(cnn.stages()):
    n_out = conv_output_size(n_in, k, s, padding)
    conv = k * k * c_in * c_out + c_out
    rows.append({
        "layer": f"conv{i}", "input": (n_in, n_in, c_in), "output": (n_out, n_out, c_out),
        "kernel": k, "stride": s, "conv": conv, "local": n_out * n_out * conv,
        "dense": (n_in * n_in * c_in + 1) * (n_out * n_out * c_out)})
    n_in, c_in = pooled[i], c_out
  return rows
