r"""`predict`'s accuracy on photo-like pictures of MNIST test digits.

  python experiments/photo_benchmark.py --workdir runs/cnn [--out runs/photo_benchmark]
      [--per_distortion 300] [--seed 0] [--nodeskew] [...any predict preprocessing flag]

Draws the first --per_distortion test digits (mnist_jax/inference/photo_benchmark.py)
under each distortion into OUT/pictures_seedS_nN/<distortion>/ (the same seed gives the
same files; existing pictures are reused), predicts every picture as
`python -m mnist_jax predict` does, and prints accuracy per distortion and
overall as a Markdown table, also written to OUT/results.md and OUT/results.json.
A picture in which no digit is found counts as wrong. The last column counts the
right and the wrong predictions `predict` calls uncertain (--uncertain_below).
For the default CNN, 200 per distortion: 99.5% overall (98.7% for the same CNN
trained without augmentation), the table in docs/inference.md ("A photo benchmark").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import mnist_jax
from mnist_jax.core import data as data_lib
from mnist_jax.core.errors import UserError
from mnist_jax.inference import digits, photo_benchmark, predict, trained


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished run")
  parser.add_argument("--out", default=os.path.join("runs", "photo_benchmark"))
  parser.add_argument("--per_distortion", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None, help="MNIST's files (MNIST_DIR)")
  parser.add_argument("--uncertain_below", type=float, default=predict.UNCERTAIN_BELOW,
                      help="count predictions under this top probability as uncertain")
  for field in dataclasses.fields(digits.Settings):
    default = getattr(digits.Settings(), field.name)
    if isinstance(default, bool):
      parser.add_argument(f"--no{field.name}", dest=field.name, action="store_false")
    else:
      parser.add_argument(f"--{field.name}", type=type(default), default=default)
  return parser.parse_args(argv)


def main(argv) -> int:
  args = parse(argv)
  mnist_jax.setup_xla()  # the programs the CLI's runs compile
  pictures = os.path.join(args.out, f"pictures_seed{args.seed}_n{args.per_distortion}")
  if not os.path.isdir(pictures):
    test = data_lib.load_split(f"test[:{args.per_distortion}]", args.data_dir)
    photo_benchmark.write(pictures, test.images[..., 0], test.labels, args.seed)
  settings = digits.Settings(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(digits.Settings)}).check()
  model = trained.load(args.workdir)
  results = photo_benchmark.score(
      lambda folder: predict.predict_files(model, [folder], settings=settings), pictures,
      args.uncertain_below)
  text = photo_benchmark.table(results, f"`predict` on {pictures} with the run "
                               f"{args.workdir}; {settings}")
  print(text)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text + "\n")
  photo_benchmark.save(results, os.path.join(args.out, "results.json"))
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main(sys.argv[1:]))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
