"""A finished run as files that need neither this package nor flax: `export_run`.

  <out>/probabilities.jax   jax.export's serialized function (StableHLO, the
                            weights inside): images Bx28x28x1 uint8 ->
                            probabilities Bx10 float32, for any batch size B;
                            jax.export.deserialize reads it back
  <out>/saved_model/        the same function as a TensorFlow SavedModel
                            (jax2tf, the weights as variables), signature
                            'serving_default': {'images'} -> {'probabilities'},
                            for TF Serving and TFLite's converter
  <out>/export.json         what both take and give, the run's test accuracy
                            and config, the jax and TensorFlow versions

The images are MNIST's: 0 (background) to 255 (ink), a light digit on black,
scaled inside by data.scale_pixels. Both files compute the evaluator's own
step (engine/evaluate.probabilities_step) with the variables evaluation uses
(inference/trained.load), lowered for CPU, CUDA and TPU.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from typing import Dict

import jax
import jax.numpy as jnp

from mnist_jax.core import data as data_lib, run_dir
from mnist_jax.core.errors import UserError
from mnist_jax.engine import evaluate as eval_lib
from mnist_jax.inference import trained as trained_lib
from mnist_jax.inference.trained import TrainedModel

JAX_FILE = "probabilities.jax"
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "export.json"
SIGNATURE, INPUT, OUTPUT = "serving_default", "images", "probabilities"
# Lowered for each, so one file serves on any of them (checked when called).
PLATFORMS = ("cpu", "cuda", "tpu")


def export_run(workdir: str, out: str) -> Dict:
  """Writes the run's exported model into the new folder `out`; returns its
  metadata (export.json). `out` appears whole or not at all."""
  _check_finished(workdir)
  if not out.strip():
    raise UserError("--out is empty: name a new folder for the files, e.g. "
                    "--out exported/cnn.")
  if os.path.lexists(out):
    raise UserError(f"--out {out} already exists: name a new folder (export never "
                    "writes into an existing one).")
  trained = trained_lib.load(workdir)
  parent, name = os.path.split(os.path.abspath(out))
  staging = os.path.join(parent, f".{name}.{os.getpid()}.partial")
  try:
    os.makedirs(staging)
  except OSError as e:
    raise run_dir.write_error(e, out, "--out") from None
  try:
    metadata = _write_all(trained, workdir, staging)
    os.rename(staging, out)
  except OSError as e:
    raise run_dir.write_error(e, out, "--out") from None
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return metadata


def _check_finished(workdir: str) -> None:
  """A UserError unless `workdir` holds a run that trained all its epochs."""
  config = run_dir.read_config(workdir)
  if not run_dir.is_finished(workdir, int(config.num_epochs)):
    epochs = len(run_dir.read_metrics(workdir))
    raise UserError(f"{workdir!r} is not a finished run ({epochs} of "
                    f"{config.num_epochs} epochs trained): finish it first (the same "
                    "`train` command resumes it), then export it.")


def _write_all(trained: TrainedModel, workdir: str, folder: str) -> Dict:
  exported = export_probabilities(trained)
  with open(os.path.join(folder, JAX_FILE), "wb") as f:
    f.write(exported.serialize())
  tf_version = write_saved_model(trained, os.path.join(folder, SAVED_MODEL_DIR))
  metadata = _metadata(trained, workdir, exported, tf_version)
  with open(os.path.join(folder, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)
    f.write("\n")
  return metadata


def probabilities_fn(trained: TrainedModel):
  """(params, batch_stats, images_BxHxWx1 uint8) -> probabilities_BxC: the
  evaluator's step for the run's model."""
  def probabilities_BxC(params, batch_stats, images_BxHxWx1):
    return eval_lib.probabilities_step(trained.model.apply, params,
                                       {"image": images_BxHxWx1}, batch_stats)
  return probabilities_BxC


def export_probabilities(trained: TrainedModel) -> jax.export.Exported:
  """images Bx28x28x1 uint8 -> probabilities, B symbolic, the weights as constants."""
  fn = functools.partial(probabilities_fn(trained), trained.params, trained.batch_stats)
  images = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape("b, _, _, _", like=(None,) + data_lib.IMAGE_SHAPE),
      jnp.uint8)
  return jax.export.export(jax.jit(fn), platforms=PLATFORMS)(images)


def write_saved_model(trained: TrainedModel, path: str) -> str:
  """The SavedModel at `path`, its batch size left open; returns TF's version."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  as_variables = lambda tree: tf.nest.map_structure(
      lambda a: tf.Variable(a, trainable=False), tree)
  module = tf.Module()
  module.params = as_variables(trained.params)
  module.batch_stats = as_variables(trained.batch_stats)
  converted = jax2tf.convert(probabilities_fn(trained),
                             polymorphic_shapes=[None, None, "(b, ...)"],
                             with_gradient=False, native_serialization_platforms=PLATFORMS)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec((None,) + data_lib.IMAGE_SHAPE, tf.uint8, name=INPUT)])
  def serve(images):
    return {OUTPUT: converted(module.params, module.batch_stats, images)}

  module.serve = serve
  tf.saved_model.save(module, path, signatures={SIGNATURE: serve})
  return tf.__version__


def _metadata(trained: TrainedModel, workdir: str, exported: jax.export.Exported,
              tf_version: str) -> Dict:
  config = trained.config
  final = run_dir.selected_metrics(workdir, config.select)
  num_classes = int(exported.out_avals[0].shape[-1])
  return {
      "input": {"name": INPUT, "shape": [None, *data_lib.IMAGE_SHAPE], "dtype": "uint8",
                "pixels": "0 (background) to 255 (ink): a light digit on black, as "
                          "MNIST; divided by 255 inside"},
      "output": {"name": OUTPUT, "shape": [None, num_classes], "dtype": "float32",
                 "values": f"softmax probability of each digit 0-{num_classes - 1}"},
      "files": {"jax_export": JAX_FILE, "saved_model": SAVED_MODEL_DIR},
      "saved_model_signature": SIGNATURE,
      "platforms": list(PLATFORMS),
      "model": config.model.name,
      "workdir": os.path.abspath(workdir),
      "epoch": final["epoch"],
      "test_accuracy": final["test_accuracy"],
      "test_count": final["test_count"],
      "jax_version": jax.__version__,
      "tensorflow_version": tf_version,
      "config": run_dir.config_as_dict(config),
  }
