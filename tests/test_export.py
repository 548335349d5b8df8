"""`export`: a run as a jax.export function and a TensorFlow SavedModel that a
process without mnist_jax and flax loads and runs, giving the run's
probabilities; bad input is one `error:` line."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import one_error_line
from robust_support import run_cli
from mnist_jax.core import run_dir
from mnist_jax.inference import trained as trained_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_IMAGES = 256

# Run in a fresh process: loads both files with jax and TensorFlow alone (and
# the SavedModel through TFLite's converter), and proves mnist_jax and flax
# stayed out of it.
LOAD_WITHOUT_THE_PACKAGE = """
import sys
import jax
import numpy as np
import tensorflow as tf

out, images = sys.argv[1], np.load(sys.argv[2])
with open(f"{out}/probabilities.jax", "rb") as f:
  exported = jax.export.deserialize(bytearray(f.read()))
model = tf.saved_model.load(f"{out}/saved_model")
serve = model.signatures["serving_default"]
converter = tf.lite.TFLiteConverter.from_saved_model(f"{out}/saved_model")
tflite = tf.lite.Interpreter(model_content=converter.convert()).get_signature_runner()
probabilities = {
    "jax": np.asarray(exported.call(images)),
    "jax_one_image": np.asarray(exported.call(images[:1])),
    "saved_model": serve(images=tf.constant(images))["probabilities"].numpy(),
    "tflite": tflite(images=images)["probabilities"],
}
loaded = [m for m in sys.modules if m.split(".")[0] in ("mnist_jax", "flax")]
assert not loaded, loaded
np.savez(sys.argv[3], **probabilities)
"""


def run_export(*args):
  return run_cli("export", *args, timeout=600)


@pytest.fixture(scope="module")
def bn_run(real_mnist, tmp_path_factory):
  """A tiny CNN with batch norm and weight averaging (its evaluation variables
  are the averaged weights and statistics), 2 short epochs on 2,000 images."""
  from configs import cnn as cnn_config
  from mnist_jax.core import data
  from mnist_jax.engine.loop import train_and_evaluate
  config = cnn_config.get_config()
  config.model.update(features=(4, 8), kernel_sizes=(3, 3), strides=(1, 1),
                      activations=("relu", "relu"), pooling=("max", "max"),
                      dense_features=(16,), dropout_rate=0.0, batch_norm=True)
  config.num_epochs = 2
  config.ema_decay = 0.9
  config.data.train_split = "train[:2000]"
  config.data.test_split = "test[:1000]"
  train, test = real_mnist
  workdir = str(tmp_path_factory.mktemp("runs") / "cnn_bn")
  train_and_evaluate(config, workdir, verbose=False,
                     data=(data.Split(train.images[:2000], train.labels[:2000]),
                           data.Split(test.images[:1000], test.labels[:1000])))
  return workdir


@pytest.fixture(scope="module")
def exported(bn_run, tmp_path_factory):
  out = tmp_path_factory.mktemp("export") / "cnn_bn"
  result = run_export("--workdir", bn_run, "--out", out)
  assert result.returncode == 0, result.stderr[-3000:]
  return out


@pytest.mark.real_data
@pytest.mark.slow
def test_both_files_give_the_run_s_probabilities_without_the_package(
    bn_run, exported, real_mnist, tmp_path):
  images = real_mnist[1].images[-NUM_IMAGES:]  # test images the run never trained on
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run(
      [sys.executable, "-c", LOAD_WITHOUT_THE_PACKAGE, str(exported),
       str(tmp_path / "images.npy"), str(tmp_path / "probabilities.npz")],
      cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  expected = trained_lib.load(bn_run).probabilities(images)
  assert expected.shape == (NUM_IMAGES, 10)
  assert len(set(expected.argmax(-1))) > 1  # a model that tells digits apart
  got = np.load(tmp_path / "probabilities.npz")
  for name in ("jax", "saved_model", "tflite"):
    np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(got["jax_one_image"], expected[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.real_data
@pytest.mark.slow
def test_metadata_describes_the_files_and_the_run(bn_run, exported):
  metadata = json.loads((exported / "export.json").read_text())
  final = run_dir.selected_metrics(bn_run)
  assert metadata["test_accuracy"] == final["test_accuracy"]
  assert metadata["epoch"] == 2
  assert metadata["input"]["shape"] == [None, 28, 28, 1]
  assert metadata["input"]["dtype"] == "uint8"
  assert metadata["output"]["shape"] == [None, 10]
  assert metadata["config"] == run_dir.config_as_dict(run_dir.read_config(bn_run))
  assert metadata["jax_version"]
  for name in metadata["files"].values():
    assert (exported / name).exists()


@pytest.mark.real_data
@pytest.mark.slow
def test_an_existing_out_is_refused_and_left_alone(bn_run, cli_here, tmp_path):
  out = tmp_path / "taken"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  error = one_error_line(cli_here("export", "--workdir", bn_run, "--out", out))
  assert "already exists" in error
  assert sorted(os.listdir(out)) == ["keep.txt"]
  assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_folder_that_is_not_a_run_is_refused(cli_here, tmp_path):
  error = one_error_line(cli_here("export", "--workdir", tmp_path, "--out", tmp_path / "out"))
  assert "not a training run" in error
  assert not (tmp_path / "out").exists()


def test_an_unfinished_run_is_refused(cli_here, tmp_path):
  from configs import cnn as cnn_config
  workdir = tmp_path / "run"
  run_dir.write_config(str(workdir), cnn_config.get_config())  # no epoch trained
  error = one_error_line(cli_here("export", "--workdir", workdir, "--out",
                                  tmp_path / "out"))
  assert "not a finished run (0 of 10 epochs" in error
  assert not (tmp_path / "out").exists()
