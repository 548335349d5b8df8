r"""Where a CNN step's time goes: its convolutions' and poolings' pieces, timed alone.

  python -m mnist_jax.tools.benchmark_ops [--config configs/cnn.py] [--batch 128]

For every conv stage of a CNN config: the forward convolution, its input
gradient and its kernel gradient, with XLA's kernel gradient over the whole
batch (`xla`) and summed over chunks of KERNEL_GRAD_CHUNK images
(`xla_chunked`); for every 2x2 max pooling (after ReLU, as in the model):
forward + backward of nn.max_pool, of reshape + max, of the strided views
with JAX's gradient, and of models/layers.py:pool (the views with the same
gradient computed per output pixel). Milliseconds per call, median of --repeats,
warm-up excluded; GFLOP/s for the convolutions (2 per multiply-add).
These are the measurements behind docs/decisions.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.tools.benchmark import print_table
from mnist_jax.core import runtime
from mnist_jax.core.config import load_config_file
from mnist_jax.core.models import build_model
from mnist_jax.core.models.cnn import INPUT_SIZE
from mnist_jax.core.models.cpu_ops import (chunked_kernel_grad, conv_input_grad,
                                           conv_output_size, max_of_views, xla_conv)
from mnist_jax.core.models.layers import pool


def median_ms(fn: Callable, *args, repeats: int) -> float:
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def xla_kernel_grad(x, kernel, g, stride, padding="SAME"):
  _, kernel_vjp = jax.vjp(lambda k: xla_conv(x, k, stride, padding), kernel)
  return kernel_vjp(g)[0]


def conv_rows(model_cfg, batch: int, repeats: int) -> List[Dict]:
  rows, size, channels = [], INPUT_SIZE, 1
  cnn = build_model(model_cfg)
  sizes, p = cnn.feature_map_sizes(), cnn.padding.upper()
  for i, (features, k, s, _, _) in enumerate(cnn.stages()):
    out = conv_output_size(size, k, s, p)
    keys = jax.random.split(jax.random.key(i), 3)
    x = jax.random.normal(keys[0], (batch, size, size, channels))
    kernel = 0.1 * jax.random.normal(keys[1], (k, k, channels, features))
    g = jax.random.normal(keys[2], (batch, out, out, features))
    mflop = 2 * batch * out * out * k * k * channels * features / 1e6
    timings = {
        "forward": median_ms(lambda x, w: xla_conv(x, w, s, p), x, kernel,
                             repeats=repeats),
        "input_grad": median_ms(lambda x, w, g: conv_input_grad(x, w, g, s, p), x, kernel,
                                g, repeats=repeats),
        "kernel_grad xla": median_ms(lambda x, w, g: xla_kernel_grad(x, w, g, s, p),
                                     x, kernel, g, repeats=repeats),
        "kernel_grad xla_chunked": median_ms(
            lambda x, w, g: chunked_kernel_grad(x, w, g, s, p), x, kernel, g,
            repeats=repeats)}
    for piece, ms in timings.items():
      rows.append({"op": f"conv{i} {size}x{size}x{channels}->{features} {piece}",
                   "ms": round(ms, 2), "gflop_s": round(mflop / ms, 1)})
    size, channels = sizes[i], features
  return rows


def pool_rows(model_cfg, batch: int, repeats: int) -> List[Dict]:
  variants = {
      "nn.max_pool": lambda x: nn.max_pool(x, (2, 2), (2, 2)),
      "reshape + max": lambda x: x.reshape(x.shape[0], x.shape[1] // 2, 2,
                                           x.shape[2] // 2, 2, x.shape[3]).max((2, 4)),
      "strided views, JAX's gradient": lambda x: max_of_views(x, 2),
      "ours: views, shares interleaved": lambda x: pool(x, "max", 2),
  }
  rows, size = [], INPUT_SIZE
  cnn = build_model(model_cfg)
  p = cnn.padding.upper()
  for i, (features, k, s, _, kind) in enumerate(cnn.stages()):
    size = conv_output_size(size, k, s, p)
    if kind == "max" and size % 2 == 0:
      x = jax.random.normal(jax.random.key(i), (batch, size, size, features))
      for name, fn in variants.items():
        loss = lambda x, fn=fn: jnp.sum(fn(jax.nn.relu(x)) ** 2)
        ms = median_ms(jax.grad(loss), x, repeats=repeats)
        rows.append({"op": f"maxpool{i} {size}x{size}x{features} fwd+bwd {name}",
                     "ms": round(ms, 2), "gflop_s": ""})
    size = size // 2 if kind != "none" else size
  return rows


def main(argv=None) -> List[Dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/cnn.py")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args(argv)
  runtime.setup_xla()  # the programs the CLI's runs compile
  model_cfg = load_config_file(args.config).model
  rows = conv_rows(model_cfg, args.batch, args.repeats) + pool_rows(
      model_cfg, args.batch, args.repeats)
  print(f"JAX {jax.__version__}, {jax.default_backend()}, batch {args.batch}")
  print_table(rows)
  return rows


if __name__ == "__main__":
  main()
