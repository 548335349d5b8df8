r"""The `cpu` accuracy recipe: a five-convolution CNN with batch norm, augmentation and EMA.

  python -m mnist_jax train --config configs/frontier_cpu.py --workdir runs/frontier_cpu/0

Three seeds (--config.seed=0,1,2, each its own workdir), then their ensemble:

  python -m mnist_jax ensemble --workdirs runs/frontier_cpu/0,runs/frontier_cpu/1,runs/frontier_cpu/2

conv32 - pool - conv64, conv64 - pool - conv128, conv128 - pool (3x3, each
convolution with batch norm and ReLU, 2x2 max pooling), dense128 with batch
norm, dropout 0.25, 10 logits. Every training image is randomly rotated (up to
10 degrees), shifted (up to 10% of its size) and zoomed (0.9-1.1) on the
device, inside the jitted step. Adam with a cosine schedule (peak 2e-3, one
warm-up epoch), label smoothing 0.1, and an EMA of the weights and of the
batch norm statistics (decay 0.999 after the warm-up min(0.999, (1 + t) /
(10 + t)) at step t; docs/training.md) for evaluation, 18 epochs on all 60,000
training images; the last epoch is reported (config.select = 'last'): nothing
is chosen by a score, so nothing needs a held-out split, and the test set is
only reported.

Measured (RESULTS.md, section 6, 2026-11-30): 99.67, 99.72, 99.73% over seeds 0-2,
ensemble 99.78% (averaged probabilities) and 99.75% (vote); at commit
5ccd3f5, before the EMA had its warm-up and its own batch statistics, 99.67,
99.73, 99.68%. What changed is visible in
the first epochs (3 epochs on train[:20000], seed 0, the 2-core CPU under
load 10-20): test accuracy per epoch 12.5%, 15.7%, 9.7% at 5ccd3f5 (the
average still held the random initial weights, evaluated with the live
weights' statistics), and 98.4%, 99.2%, 99.3% with the warm-up and the EMA's
own statistics (the same training: identical train loss and accuracy).

How the recipe was chosen (RESULTS.md, section 6). Version 1 was the default
CNN (one convolution per stage) with batch norm, 30 epochs, holding out the
last 5,000 training images and keeping the best validation epoch; over three
seeds that selection changed the test accuracy by at most 0.01 points against
the last epoch, so version 2 trained on those images too. Version 1's
validation accuracy was 99.52-99.60% at epoch 16 of 30 and 99.54-99.66% at
the last, when its accuracy on the (augmented) training batches was only
99.62-99.65%: the model needed capacity, not epochs, so version 3 (this file)
doubles the convolutions of the 14x14 and 7x7 stages
(2.9x the FLOPs per image) and trains 18 epochs instead of 30. Elastic
distortions (alpha 34, sigma 4) on top of the affine warps were stopped after
24 epochs of version 1: validation accuracy 99.38% against 99.58% without
them at that epoch.
"""

from mnist_jax.core.config import load_config_file


def get_config():
  config = load_config_file("configs/cnn.py")
  # Two convolutions in the 14x14 and 7x7 stages (pooling only after the
  # second): 2.9x version 2's FLOPs per image, so 18 epochs, not 30, to stay
  # near 30 minutes on the 2-core CPU.
  config.model.update(dict(
      features=(32, 64, 64, 128, 128),
      kernel_sizes=(3,) * 5,
      strides=(1,) * 5,
      activations=("relu",) * 5,
      pooling=("max", "none", "max", "none", "max"),
  ))
  config.model.batch_norm = True
  config.num_epochs = 18
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_epochs = 1.0
  config.label_smoothing = 0.1
  config.ema_decay = 0.999
  config.augment.update(dict(enabled=True, rotation_deg=10.0, translate_frac=0.1,
                             scale_min=0.9, scale_max=1.1))
  return config
