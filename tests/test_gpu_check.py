"""scripts/gpu_check.sh in its tiny form (GPU_CHECK_TINY=1) on this machine:
all three parts run and the summary holds their numbers."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "scripts" / "gpu_check.sh")


@pytest.mark.slow
@pytest.mark.real_data
def test_tiny_gpu_check_writes_a_summary_with_every_part(mnist_dir, tfds_dir, tmp_path):
  env = dict(os.environ, GPU_CHECK_TINY="1", PYTHON=sys.executable,
             MNIST_DIR=mnist_dir, TFDS_DATA_DIR=tfds_dir)
  out = tmp_path / "check"
  result = subprocess.run(["bash", SCRIPT, str(out)], env=env, capture_output=True,
                          text=True, timeout=1500)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = (out / "summary.md").read_text()
  assert f"Device: {jax.devices()[0].device_kind} " in summary
  for part in ("benchmark", "speedrun", "study"):  # each ran and succeeded
    assert re.search(rf"^\| {part} \| 0 \| \d+\.\d \|$", summary, re.M), part
  assert re.search(r"^\| mlp \| 128 \| ", summary, re.M)  # the benchmark's row
  # The speedrun's seed 0: accuracy, training, end-to-end and CPU seconds, load.
  assert re.search(r"^\| 0 \| \d+\.\d\d% \| \d+\.\d \| \d+\.\d \| \d+\.\d \| \d+\.\d \|$",
                   summary, re.M)
  assert "Mean test accuracy" in summary and "over 1 seed;" in summary
  # Every --set reached the run: 1 epoch of 7 full batches of 128 of the 1,000 images.
  seed0 = json.loads((out / "speedrun" / "speedrun.json").read_text())["rows"][0]
  assert (seed0["epochs"], seed0["train_images"]) == (1, 7 * 128)
  assert "## Study kernel_size (--quick)" in summary and "3x3" in summary
  # The study's tiny form: one point, one seed.
  assert sorted(p.name for p in (out / "study").glob("cnn_*")) == ["cnn_k3"]
  assert sorted(p.name for p in (out / "study" / "cnn_k3").iterdir()) == ["seed_0"]


def test_gpu_check_without_outdir_prints_its_usage():
  result = subprocess.run(["bash", SCRIPT], capture_output=True, text=True)
  assert result.returncode == 2 and "usage: scripts/gpu_check.sh OUTDIR" in result.stderr
