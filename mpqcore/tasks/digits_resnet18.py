"""``digits-resnet18``: torchvision's ResNet-18 trained on handwritten digits at 32x32.

The architecture is ``torchvision.models.resnet18(num_classes=10)`` with ``conv1``
replaced by a one-channel 7x7 stride-2 convolution (the stem and max-pool are kept, so
the 32x32 input is 8x8 after the stem and CPU training stays cheap). 21 quantizable
layers: 20 convolutions (3 of them downsample shortcuts) and ``fc``. The 8x8 digits of
:mod:`mpqcore.tasks.digits` are upsampled bilinearly to 32x32. Trained on CPU,
deterministically, and cached (see :mod:`mpqcore.tasks._cache`).
"""

from __future__ import annotations

import time

import attrs
import torch
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.options import option
from mpqcore.tasks import Task, TaskBuilder, _cache, digits

__all__ = ["DigitsResNet18Options", "build", "make_model"]

#: Bump when the architecture or the training loop changes, so caches retrain.
TRAIN_VERSION = 1
SIZE = 32


def make_model() -> nn.Module:
    """ResNet-18 for one-channel 32x32 input and 10 classes (untrained)."""
    try:
        from torchvision.models import resnet18
    except ImportError as exc:
        raise ConfigError('the digits-resnet18 task needs torchvision: pip install "mpqcore[vision]"') from exc
    model = resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


@attrs.frozen
class DigitsResNet18Options(digits.DigitsTrainingOptions):
    """The options of ``digits-resnet18``.

    ``threads`` is the CPU thread count during training; it is part of the cache key,
    since results are bit-identical only for the same count.
    """

    epochs: int = option(int, default=8, minimum=1, help="training epochs")
    lr: float = option(float, default=1e-3, greater_than=0.0, help="Adam learning rate")
    weight_decay: float = option(float, default=1e-4, minimum=0.0, help="Adam weight decay")
    threads: int = option(int, default=1, minimum=1, help="CPU threads while training")


@TaskBuilder.taking(DigitsResNet18Options)
def build(opts: DigitsResNet18Options) -> Task:
    """ResNet-18 trained on scikit-learn's handwritten digits upsampled to 32x32; metric: test accuracy."""
    t0 = time.perf_counter()
    split = digits.load_split()
    x_train, x_cal, x_test = (digits.upsample(x, SIZE) for x in (split.x_train, split.x_calibration, split.x_test))
    config = {
        "task": "digits-resnet18",
        "version": TRAIN_VERSION,
        **opts.training_config(),
        "weight_decay": opts.weight_decay,
        "threads": opts.threads,
        "split_seed": digits.SPLIT_SEED,
        "n_train": digits.N_TRAIN,
        "size": SIZE,
    }

    def train() -> dict[str, torch.Tensor]:
        with _cache.deterministic(opts.seed, threads=opts.threads):
            model = make_model()
            return digits.train_classifier(
                model, x_train, split.y_train, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                weight_decay=opts.weight_decay, seed=opts.seed, progress=opts.progress, desc="digits-resnet18",
            )  # fmt: skip

    model, meta = digits.load_trained("digits-resnet18", make_model, config, train, opts)
    calibration = digits.calibration_batches(x_cal, opts)
    metric = _cache.accuracy_metric(x_test, split.y_test, batch_size=200)
    float_metric = metric(model)
    info = {
        **meta,
        "float_metric": float_metric,
        "n_params": _cache.count_params(model),
        "build_time_s": time.perf_counter() - t0,
        "n_train": len(x_train),
        "n_calibration": len(x_cal),
        "n_test": len(x_test),
        "seed": opts.seed,
        "config": config,
    }
    return Task(
        name="digits-resnet18",
        model=model,
        calibration=calibration,
        metric=metric,
        metric_name="accuracy",
        description=(
            f"torchvision ResNet-18 (1-channel stem) on scikit-learn's digits upsampled to 32x32; top-1 accuracy "
            f"on {len(x_test)} held-out test images (float: {float_metric:.4f})"
        ),
        info=info,
    )
