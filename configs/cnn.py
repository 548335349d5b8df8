r"""The default CNN: three conv stages (low-, mid-, high-level patterns), dense head.

  python -m mnist_jax train --config configs/cnn.py --workdir runs/cnn

conv32(3x3)-maxpool-conv64(3x3)-maxpool-conv128(3x3)-maxpool-dense128-dense10,
ReLU, dropout 0.25 in the head, Adam 1e-3 with a cosine schedule, batch 128,
10 epochs. Measured accuracy and time: see the table in README.md.
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
      pool_before_norm=False,  # True: each stage conv -> pool -> norm -> activation
      activations=("relu", "relu", "relu"),
      pooling=("max", "max", "max"),  # max | avg | none, per stage
      pool_size=2,
      dense_features=(128,),
      dropout_rate=0.25,
      num_classes=10,
      conv_type="conv",  # conv | local (no weight sharing, nn.ConvLocal)
      conv_impl="auto",  # auto | xla | im2col | xla_chunked: same function (docs/decisions.md)
  )
  config.num_epochs = 10
  return config
