"""Properties over generated inputs (hypothesis; tests/hypothesis_profiles.py
sets how many examples): split strings against tfds's own reader, every
config field through the command line, digit preprocessing of any drawing,
and the step dispatcher over any epoch, span and resume offset."""

from __future__ import annotations

import contextlib
import io
import pathlib
import string

import ml_collections
import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from hypothesis_profiles import examples
from mnist_jax import UserError
from mnist_jax.cli import COMMANDS, run as cli_run
from mnist_jax.cli.command import parse
from mnist_jax.core import config as config_lib
from mnist_jax.core import data as data_lib
from mnist_jax.engine.steps import dispatch_spans, span_indices
from mnist_jax.inference import digits

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.py"))

# ---------------------------------------------------------------- split strings

# A split of three shards and one of one, small enough to read per example.
TRAIN_SIZE, TEST_SIZE, TRAIN_SHARDS = 300, 100, 3


@pytest.fixture(scope="module")
def indexed_tfds(tmp_path_factory):
  """(a prepared tfds builder whose examples hold their own index, the indices
  of each split in the order stored in its files)."""
  import tensorflow as tf
  import tensorflow_datasets as tfds

  class Indexed(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict({"index": tf.int64}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, TRAIN_SIZE),
              "test": self._generate_examples(TRAIN_SIZE, TEST_SIZE)}

    def _generate_examples(self, first, count):
      for i in range(first, first + count):
        yield i, {"index": i}

  builder = Indexed(data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(num_shards=TRAIN_SHARDS))
  stored = {}
  for name, info in builder.info.splits.items():
    files = [f"{name}[{i}shard]" for i in range(len(info.shard_lengths))]  # one file each
    stored[name] = np.array([i for f in files for i in _read(builder, f)], np.int32)
  return builder, stored


def _read(builder, spec):
  return [int(x["index"]) for x in builder.as_dataset(split=spec, shuffle_files=False)
          .as_numpy_iterator()]


def _tfds_examples(builder, spec):
  """The indices tfds reads for `spec`, or None if tfds refuses it."""
  try:
    return _read(builder, spec)
  except Exception:  # noqa: BLE001 -- any refusal, whatever tfds raises
    return None


def _without_backward_slices(builder, spec):
  """`spec` with its backward or empty slices dropped ('' if nothing is left),
  as core/splits.py reads it: tfds would read 'train[50:10]' as 'train[50:]'."""
  import tensorflow_datasets as tfds
  splits = builder.info.splits
  parts = [(p.splitname, p.from_ or 0, splits[p.splitname].num_examples if p.to is None
            else p.to) for p in tfds.core.ReadInstruction.from_spec(spec).to_absolute(splits)]
  kept = [f"{name}[{start}:{stop}]" for name, start, stop in parts if stop > start]
  return spec if len(kept) == len(parts) else "+".join(kept)


_bound = st.one_of(
    st.just(""), st.integers(-450, 450).map(str),
    st.integers(-120, 120).map(lambda p: f"{p}%"))
_slice = st.one_of(
    st.just(""), st.tuples(_bound, _bound).map(lambda ab: f"[{ab[0]}:{ab[1]}]"),
    st.integers(-5, 5).map(lambda i: f"[{i}]"),
    st.integers(-1, 4).map(lambda i: f"[{i}shard]"))
_part = st.tuples(st.sampled_from(["train", "test", "all", "validation"]), _slice).map("".join)
_junk = st.text(alphabet="traintes[]:%+-0123456789shard ,.", max_size=14)
SPLIT_STRINGS = st.one_of(st.lists(_part, min_size=1, max_size=3).map("+".join), _junk)


@pytest.mark.filterwarnings("ignore")
@examples(0.5)
@given(spec=SPLIT_STRINGS)
def test_our_split_reader_reads_what_tfds_reads_or_both_refuse(indexed_tfds, spec):
  builder, stored = indexed_tfds
  shard_lengths = {name: info.shard_lengths for name, info in builder.info.splits.items()}
  arrays = {name: (idx, idx) for name, idx in stored.items()}  # indices as "images"
  theirs = _tfds_examples(builder, spec)
  event("tfds refuses it" if theirs is None else "tfds reads it")
  try:
    ours = data_lib._select(spec, shard_lengths, arrays).labels.tolist()
  except UserError as error:
    if theirs is not None:  # tfds reads it: ours may refuse only what selects nothing
      assert "is empty" in str(error), (spec, theirs[:20])
      assert _without_backward_slices(builder, spec) == "", (spec, theirs[:20])
    return
  assert theirs is not None, (spec, ours[:20])
  expected = _tfds_examples(builder, _without_backward_slices(builder, spec))
  assert ours == expected, spec


# ---------------------------------------------------------------- config fields

def _fields(config, prefix=""):
  """(dotted name, value) of every field of a config; a tuple is one field."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _fields(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


FIELDS = [(path, name, value) for path in CONFIGS
          for name, value in _fields(config_lib.load_config_file(path))]

_words = st.text(alphabet=string.ascii_letters + string.digits + "_-.:/[]%+= ", max_size=20)


def _value_like(value):
  """A strategy of values of `value`'s type (a tuple: of its items' type)."""
  if isinstance(value, bool):
    return st.booleans()
  if isinstance(value, int):
    return st.integers(-2**40, 2**40)
  if isinstance(value, float):
    return st.floats(allow_nan=False, allow_infinity=False)
  if isinstance(value, str):
    return _words
  if isinstance(value, tuple):
    items = [_value_like(v) for v in value] or [st.integers(0, 100)]
    return st.lists(st.one_of(*items) if len(value) < 2 else items[0],
                    max_size=5).map(tuple)
  raise AssertionError(f"a config field of type {type(value).__name__}: add it here")


@st.composite
def field_and_value(draw):
  path, name, default = draw(st.sampled_from(FIELDS))
  return path, name, draw(_value_like(default))


def _as_text(value):
  if isinstance(value, bool):
    return str(value).lower()
  return repr(value) if isinstance(value, (float, tuple)) else str(value)


@examples()
@given(case=field_and_value())
def test_a_command_line_override_gives_the_typed_value(case):
  path, name, value = case
  fv, _ = parse(COMMANDS["train"], ["--config", path, "--workdir", "unused",
                                    f"--config.{name}={_as_text(value)}"])
  parsed = config_lib.config_value(fv.config, name)
  assert parsed == value and type(parsed) is type(value), (name, value, parsed)


def _cli_error(argv):
  """(exit status, stderr lines) of `python -m mnist_jax ARGV`, in-process."""
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
    cli_run(argv)
  return exit_.value.code, stderr.getvalue().splitlines()


def _misspelt(name, draw):
  """`name` with one character of its last part inserted, dropped or changed."""
  *parents, leaf = name.split(".")
  i = draw(st.integers(0, len(leaf)))
  c = draw(st.sampled_from(string.ascii_lowercase + "_"))
  edit = draw(st.sampled_from(["insert", "drop", "change"]))
  leaf = {"insert": leaf[:i] + c + leaf[i:], "drop": leaf[:i] + leaf[i + 1:],
          "change": leaf[:i] + c + leaf[i + 1:]}[edit]
  return ".".join([*parents, leaf])


WRONG_TEXT = {bool: st.sampled_from(["maybe", "yes please", "2", "tru"]),
              int: st.one_of(st.floats(allow_nan=False).map(repr).filter(
                  lambda t: not t.endswith(".0")), st.sampled_from(["ten", "1e3", "", "1_0x"])),
              float: st.sampled_from(["fast", "1.0.0", "", "1e", "--"])}


@st.composite
def bad_override(draw):
  path, name, default = draw(st.sampled_from(FIELDS))
  if draw(st.booleans()) or type(default) not in WRONG_TEXT:
    bad = _misspelt(name, draw)
    config = config_lib.load_config_file(path)
    assume(bad and not config_lib.has_field(config, bad))
    return path, bad, draw(_value_like(default).map(_as_text))
  return path, name, draw(WRONG_TEXT[type(default)])


@examples()
@given(case=bad_override())
def test_a_misspelt_field_or_a_wrong_type_is_one_error_line(case, tmp_path_factory):
  path, name, text = case
  workdir = tmp_path_factory.getbasetemp() / "never_written"
  status, lines = _cli_error(["train", "--config", path, "--workdir", str(workdir),
                              f"--config.{name}={text}"])
  assert status == 2, lines
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert not workdir.exists()


# ---------------------------------------------------------------- digit images

@st.composite
def strokes(draw):
  """A 'digit': 1-3 polylines of 2-5 points in the unit square, each one
  starting on a point of the one before (a digit's strokes touch: pieces
  apart are what preprocessing drops as specks), touching the square's top
  and bottom (so the drawing's height is its scale), with at least the ink
  of one stroke across the square (not a dot and a dash)."""
  point = st.tuples(st.floats(0, 1), st.floats(0, 1))
  lines = draw(st.lists(st.lists(point, min_size=2, max_size=5), min_size=1, max_size=3))
  for i in range(1, len(lines)):
    lines[i] = [draw(st.sampled_from(lines[i - 1]))] + lines[i][1:]
  ys = [y for line in lines for _, y in line]
  xs = [x for line in lines for x, _ in line]
  length = sum(np.hypot(x1 - x0, y1 - y0) for line in lines
               for (x0, y0), (x1, y1) in zip(line, line[1:]))
  assume(max(ys) - min(ys) > 0.5 and max(xs) - min(xs) > 0.2 and length > 1.0)
  # Preprocessing removes long straight horizontal and vertical lines as ruled
  # lines and paper edges (docs/inference.md), so no stroke here is one.
  assume(not any(_ruled(a, b) for line in lines for a, b in zip(line, line[1:])))
  return lines


def _ruled(a, b) -> bool:
  """Is the segment a..b (unit square) a long, nearly axis-parallel line?"""
  dx, dy = abs(b[0] - a[0]), abs(b[1] - a[1])
  return max(dx, dy) > 0.6 and min(dx, dy) < 0.1 * max(dx, dy)


@st.composite
def renderings(draw):
  """How a digit is put on the page: (height in pixels, offset in the page's
  margins as fractions, dark ink on light paper?, image mode)."""
  # From 48 pixels up, the pen's width (8% of the height, whole pixels) keeps
  # the digit's proportions within 12%: below, a pixel of rounding changes them
  # by up to 40%, and two sizes would no longer be the same digit.
  return (draw(st.integers(48, 200)), draw(st.floats(0, 1)), draw(st.floats(0, 1)),
          draw(st.booleans()), draw(st.sampled_from(["L", "RGB", "RGBA"])))


def draw_digit(lines, rendering) -> Image.Image:
  height, fx, fy, dark_ink, mode = rendering
  width = round(height * 0.08)  # the pen scales with the digit
  margin = width + 4
  page_w, page_h = height + 2 * margin + 40, height + 2 * margin + 30
  left, top = margin + fx * 40, margin + fy * 30
  paper, ink = (255, 0) if dark_ink else (0, 255)
  page = Image.new("L", (page_w, page_h), paper)
  pen = ImageDraw.Draw(page)
  for line in lines:
    pen.line([(left + x * height, top + y * height) for x, y in line], fill=ink,
             width=width, joint="curve")
  if mode == "RGBA":  # the ink opaque on a transparent page
    alpha = Image.eval(page, lambda v: abs(v - paper))
    rgba = Image.new("RGBA", page.size, (ink, ink, ink, 0))
    rgba.putalpha(alpha)
    return rgba
  return page.convert(mode)


def preprocess(image: Image.Image) -> np.ndarray:
  return digits.to_mnist(digits.to_grey(image))


def centre_of_mass(x_HxW):
  rows, cols = np.indices(x_HxW.shape)
  return (rows * x_HxW).sum() / x_HxW.sum(), (cols * x_HxW).sum() / x_HxW.sum()


@examples()
@given(lines=strokes(), rendering=renderings())
def test_any_drawing_becomes_a_centred_mnist_digit(lines, rendering):
  x = preprocess(draw_digit(lines, rendering))
  assert x.shape == (28, 28) and 0.0 <= x.min() and x.max() <= 1.0
  border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
  # White ink on black (a lopsided digit, centred by mass, may reach the frame).
  assert np.median(border) < 0.05 and np.mean(border > 0.5) < 0.15 and x.max() > 0.5
  row, col = centre_of_mass(x)
  assert abs(row - 13.5) < 3 and abs(col - 13.5) < 3, (row, col)


def _distance(a, b, shift=1):
  """Mean absolute difference of a and b, at the best shift of b by up to
  `shift` pixels (centring by mass rounds to whole pixels)."""
  return min(np.abs(a - np.roll(b, (dy, dx), axis=(0, 1))).mean()
             for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1))


@examples()
@given(lines=strokes(), first=renderings(), second=renderings())
def test_the_same_digit_drawn_anywhere_at_any_size_looks_the_same(lines, first, second):
  a, b = preprocess(draw_digit(lines, first)), preprocess(draw_digit(lines, second))
  # Two different drawings of these strokes differ by a median of ~0.13 here.
  assert _distance(a, b) < 0.08, (first, second)


# ---------------------------------------------------------------- step dispatcher

@examples()
@given(steps=st.integers(1, 300), k=st.integers(1, 40), data=st.data())
def test_every_step_of_an_epoch_runs_once_in_order_from_any_resume_point(steps, k, data):
  """The loop trains dispatch_spans(first_batch, ...) with span_indices; a
  resumed run restarts at the batch its checkpoint names (any batch; saves
  fall on span ends)."""
  batch = data.draw(st.integers(1, 4))
  first = data.draw(st.integers(0, steps))
  order_N = np.random.default_rng(steps).permutation(steps * batch + batch - 1)  # ragged tail
  spans = list(dispatch_spans(first, steps, k))
  ran = [span_indices(order_N, a, b, batch) for a, b in spans]
  assert all(1 <= b - a <= k for a, b in spans)
  assert spans == [] if first == steps else (  # contiguous, up to the epoch's end
      [a for a, _ in spans] == [first] + [b for _, b in spans[:-1]] and spans[-1][1] == steps)
  trained = np.concatenate([r.reshape(-1, batch) for r in ran]) if ran else np.zeros((0, batch))
  assert trained.tolist() == order_N[first * batch:steps * batch].reshape(-1, batch).tolist()
  # A run resumed at any span end of an unbroken run calls the same spans from there.
  unbroken = list(dispatch_spans(0, steps, k))
  for i, (_, stop) in enumerate(unbroken):
    assert list(dispatch_spans(stop, steps, k)) == unbroken[i + 1:]
  # From mid-span, only the first call is shorter: then the unbroken run's spans.
  if spans:
    assert spans[1:] == [s for s in unbroken if s[0] >= spans[0][1]]


@examples()
@given(seeds=st.integers(1, 3), steps=st.integers(1, 30), k=st.integers(1, 8),
       batch=st.integers(1, 3))
def test_stacked_seeds_get_their_own_order_in_every_span(seeds, steps, k, batch):
  orders_SxN = np.stack([np.random.default_rng(s).permutation(steps * batch)
                         for s in range(seeds)])
  for a, b in dispatch_spans(0, steps, k):
    idx_SxKxB = span_indices(orders_SxN, a, b, batch)
    assert idx_SxKxB.shape == (seeds, b - a, batch)
    for s in range(seeds):
      assert idx_SxKxB[s].ravel().tolist() == orders_SxN[s, a * batch:b * batch].tolist()
