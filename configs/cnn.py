r"""The default CNN: three conv stages (low-, mid-, high-level patterns), dense head.

  python -m mnist_jax train --config configs/cnn.py --workdir runs/cnn

conv32(3x3)-maxpool-conv64(3x3)-maxpool-conv128(3x3)-maxpool-dense128-dense10,
ReLU, dropout 0.25 in the head, Adam 1e-3 with a cosine schedule, batch 128,
10 epochs. Every training image is randomly rotated (up to 10 degrees),
shifted (up to 10% of its size) and zoomed (0.9-1.1) on the device, inside
the jitted step (mnist_jax/core/augment.py): digits written at another slant,
size or place than MNIST's centred ones are still familiar. Measured accuracy
and time: see the table in README.md; on photo-like pictures:
docs/inference.md ("A photo benchmark").

Why these warps: chosen on the validation split only (the last 5,000
training images held out, --config.data.validation_size=5000, 10 epochs,
seed 0; the test set chose nothing), validation accuracy at the last epoch
was 99.42% with them and 99.32% without (5 of 5,000 images, one seed; the
best epochs 99.44% and 99.42%). Measured after the choice, and not used for
it: MNIST test accuracy 99.52% with them, 99.46% without; `predict` on the
photo benchmark (experiments/photo_benchmark.py, 200 per distortion) 99.5%
against 98.7% overall. They are the warps of configs/frontier_cpu.py (a turn
of 10 degrees cannot make a 9 of a 6). Elastic distortions on top are not
used: on the frontier recipe they trailed the affine warps alone on
validation (99.38% against 99.58% at epoch 24; configs/frontier_cpu.py).
"""

from mnist_jax.core.config import base_config


def get_config():
  config = base_config()
  config.model = dict(
      name="cnn",
      features=(32, 64, 128),
      kernel_sizes=(3, 3, 3),
      strides=(1, 1, 1),
      padding="same",  # same | valid (no zeros: a k x k kernel shrinks the map by k - 1)
      pool_before_norm=False,  # True: conv -> pool -> norm -> act (ReLU + max without norm always)
      activations=("relu", "relu", "relu"),
      pooling=("max", "max", "max"),  # max | avg | none, per stage
      pool_size=2,
      dense_features=(128,),
      dropout_rate=0.25,
      num_classes=10,
      conv_type="conv",  # conv | local (no weight sharing, nn.ConvLocal)
      conv_impl="auto",  # auto | xla | im2col | xla_chunked | taps: one function, other programs
  )
  config.num_epochs = 10
  config.augment.update(dict(enabled=True, rotation_deg=10.0, translate_frac=0.1,
                             scale_min=0.9, scale_max=1.1))
  return config
