"""The decoded MNIST arrays kept in the cache: the same examples as tfds, no
TensorFlow, a damaged cache rebuilt, a damaged tfds copy one clear line.

Every damaged copy is built under tmp from a copy of the prepared one; the
prepared copy itself ($TFDS_DATA_DIR or a fresh one) is only read.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mnist_jax import UserError
from mnist_jax.core import data, runtime

from helpers import one_error_line

pytestmark = pytest.mark.real_data
REPO = pathlib.Path(__file__).resolve().parents[1]
# The splits of 10,000 images or more are read through tfds in the slow tier.
SPLITS = [pytest.param("test", marks=pytest.mark.slow),
          pytest.param("train[:50000]", marks=pytest.mark.slow), "train[-5000:]",
          "test[:10%]", "test[33.3%:]", "train[:2%]+test[-500:]",
          "test[:100]+train[:40]+test[-20:]", pytest.param("all", marks=pytest.mark.slow)]
TRAIN_ONE_EPOCH = ["train", "--config", "configs/mlp.py", "--config.num_epochs=1"]


def cache_folder(version_dir):
  """The name of the cache folder of the tfds copy in `version_dir`."""
  _, fingerprint = data._inspect_copy(str(version_dir))
  return f"{data.TFDS_VERSION}-{fingerprint[:20]}"


@pytest.fixture(scope="session")
def copy_and_cache(real_mnist, tfds_dir, tmp_path_factory):
  """(a tfds data dir holding a copy of the prepared MNIST, a cache dir holding
  its decoded arrays). The session decoded them once (real_mnist); the copy has
  the same files, so the same arrays: copied, not decoded through tfds again."""
  root = tmp_path_factory.mktemp("cached")
  copy = root / "tfds"
  shutil.copytree(os.path.join(tfds_dir, "mnist", data.TFDS_VERSION),
                  copy / "mnist" / data.TFDS_VERSION)
  cache = root / "cache"
  name = cache_folder(copy / "mnist" / data.TFDS_VERSION)
  shutil.copytree(os.path.join(runtime.cache_home(), "mnist", name), cache / "mnist" / name)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(runtime.CACHE_DIR_ENV, str(cache))
    patch.setattr(data, "_decode_with_tfds", None)  # decoding again would be a bug
    data.load_mnist(data_dir=str(copy))  # the copy's arrays, from the cache
  assert len(os.listdir(cache / "mnist")) == 1
  return copy, cache


@pytest.fixture
def cached(copy_and_cache, monkeypatch):
  """The copy's data dir, with the cache of the session in effect."""
  copy, cache = copy_and_cache
  monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(cache))
  return copy


def damaged_copy(copy, tmp_path):
  target = tmp_path / "tfds"
  shutil.copytree(copy, target)
  return target, target / "mnist" / data.TFDS_VERSION


def assert_one_line(error, *fragments):
  text = str(error.value)
  assert "\n" not in text
  for fragment in fragments:
    assert fragment in text, text


def run_cli(args, env_extra, prefix=()):
  return subprocess.run([*prefix, sys.executable, "-m", "mnist_jax", *args], cwd=REPO,
                        env=dict(os.environ, **env_extra), capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("spec", SPLITS)
def test_cached_arrays_equal_tfds_as_dataset(cached, spec):
  builder = tfds.builder(f"mnist:{data.TFDS_VERSION}", data_dir=str(cached))
  ours, theirs = data.load_split(spec, data_dir=str(cached)), data._read_tfds(builder, spec)
  assert ours.images.dtype == np.uint8 and ours.labels.dtype == np.int32
  assert len(ours) == len(theirs) > 0
  assert np.array_equal(ours.images, theirs.images)
  assert np.array_equal(ours.labels, theirs.labels)


def test_loading_from_the_cache_imports_no_tensorflow(cached):
  code = ("import sys; from mnist_jax.core import data; "
          f"train, test = data.load_mnist(data_dir={str(cached)!r}, "
          "train_split='train[:10%]'); "
          "assert len(train) == 6000 and len(test) == 10000; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, MNIST_DIR=""))
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def test_a_bogus_split_names_the_valid_ones(cached):
  with pytest.raises(UserError) as error:
    data.load_split("bogus", data_dir=str(cached))
  assert_one_line(error, "'bogus' is not a split of MNIST", "train, test")


def test_an_empty_or_too_long_split_is_refused(cached):
  with pytest.raises(UserError, match=r"split 'train\[:0\]' of MNIST is empty"):
    data.load_split("train[:0]", data_dir=str(cached))
  with pytest.raises(UserError, match="incompatible with 60000 examples"):
    data.load_split("train[:70000]", data_dir=str(cached))


@pytest.mark.parametrize("damage,reason", [
    ("delete_record", "mnist-test.tfrecord-00000-of-00001 is missing"),
    ("delete_info", "dataset_info.json is missing"),
    ("truncate", "truncated record"),
    ("flip", "corrupted record"),
])
def test_a_damaged_copy_says_what_to_delete(cached, tmp_path, damage, reason):
  """After the cache was built from the good copy: the damage is still noticed
  (the copy's hash no longer matches, so tfds reads it again and its CRCs fail)."""
  data_dir, version_dir = damaged_copy(cached, tmp_path)
  record = version_dir / "mnist-test.tfrecord-00000-of-00001"
  if damage == "delete_record":
    record.unlink()
  elif damage == "delete_info":
    (version_dir / "dataset_info.json").unlink()
  elif damage == "truncate":
    record.write_bytes(record.read_bytes()[:-1000])
  else:
    raw = bytearray(record.read_bytes())
    raw[1000] ^= 0x10  # inside the first image's PNG bytes
    record.write_bytes(bytes(raw))
  with pytest.raises(UserError) as error:
    data.load_split("test", data_dir=str(data_dir))
  assert_one_line(error, reason, f"delete {version_dir} and run again", "MNIST_DIR")


def test_the_cli_says_which_copy_to_delete(cached, cli_here, tmp_path, monkeypatch):
  """dataset_info.json deleted: tfds alone would call the copy 'not prepared'."""
  data_dir, version_dir = damaged_copy(cached, tmp_path)
  (version_dir / "dataset_info.json").unlink()
  monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  result = cli_here(*TRAIN_ONE_EPOCH, "--workdir", tmp_path / "run")
  one_error_line(result, "dataset_info.json is missing", f"delete {version_dir}")


def as_non_root():
  """A command prefix under which root cannot write into a read-only folder."""
  if os.geteuid() != 0:
    return []
  assert shutil.which("setpriv"), "root without setpriv cannot test a read-only folder"
  return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.slow  # a command-line process
def test_a_read_only_tfds_dir_that_needs_preparing_is_one_line(mnist_dir, tmp_path):
  readonly = tmp_path / "readonly"
  readonly.mkdir()
  readonly.chmod(0o555)
  result = run_cli(TRAIN_ONE_EPOCH + ["--workdir", str(tmp_path / "run")],
                   {"TFDS_DATA_DIR": str(readonly / "tfds"), "MNIST_DIR": mnist_dir},
                   prefix=as_non_root())
  one_error_line(result, "read-only", "TFDS_DATA_DIR")
  assert not (readonly / "tfds").exists()


@pytest.mark.slow  # decodes all 70,000 images through tfds again
def test_a_damaged_cache_is_rebuilt_not_used(copy_and_cache, tmp_path, monkeypatch):
  copy, good_cache = copy_and_cache
  cache = tmp_path / "cache"
  shutil.copytree(good_cache, cache)
  monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(cache))
  (folder,) = (cache / "mnist").iterdir()
  good = good_cache / "mnist" / folder.name
  images = folder / "test_images.npy"
  raw = bytearray(images.read_bytes())
  raw[-5] ^= 0xFF  # a pixel of the last test image: the shape still reads right
  images.write_bytes(bytes(raw))
  assert data._load_cache(str(folder), {"test": (10_000,)}) is None
  rebuilt = data.load_split("test", data_dir=str(copy))  # decoded through tfds again
  assert np.array_equal(rebuilt.images, np.load(good / "test_images.npy"))
  assert images.read_bytes() == (good / "test_images.npy").read_bytes()
  (folder / "train_labels.npy").write_bytes(b"")  # truncated
  assert data._load_cache(str(folder), {"train": (60_000,)}) is None
  assert data._load_cache(str(good), {"train": (60_000,)}) is not None


def test_tfds_still_builds_the_pinned_version_in_the_default_dir(monkeypatch):
  assert str(tfds.builder("mnist").version) == data.TFDS_VERSION
  from tensorflow_datasets.core import constants
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  assert data.resolve_tfds_dir() == constants.get_default_data_dir()
  monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere")
  assert data.resolve_tfds_dir() == constants.get_default_data_dir() == "/somewhere"
