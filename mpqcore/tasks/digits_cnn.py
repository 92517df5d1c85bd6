"""``digits-cnn``: a small CNN trained on scikit-learn's handwritten digits.

Five quantizable layers of very different sizes (144 to 18,432 weights): three 3x3
convolutions and two linear layers. Trained on CPU in a few seconds, deterministically,
and cached (see :mod:`mpqcore.tasks._cache`).
"""

from __future__ import annotations

import time

import attrs
import torch
from torch import nn

from mpqcore.options import option
from mpqcore.tasks import Task, TaskBuilder, _cache, digits

__all__ = ["DigitsCNN", "DigitsCNNOptions", "build"]

#: Bump when the architecture or the training loop changes, so caches retrain.
TRAIN_VERSION = 1


class DigitsCNN(nn.Module):
    """conv 1->16, conv 16->32, pool, conv 32->64, pool, linear 256->64, linear 64->10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(64 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.pool(self.act(self.conv2(x)))  # 8x8 -> 4x4
        x = self.pool(self.act(self.conv3(x)))  # 4x4 -> 2x2
        x = self.act(self.fc1(x.flatten(1)))
        return self.fc2(x)


@attrs.frozen
class DigitsCNNOptions(digits.DigitsTrainingOptions):
    """The options of ``digits-cnn``."""

    epochs: int = option(int, default=30, minimum=1, help="training epochs")
    lr: float = option(float, default=3e-3, greater_than=0.0, help="Adam learning rate")


@TaskBuilder.taking(DigitsCNNOptions)
def build(opts: DigitsCNNOptions) -> Task:
    """Small CNN trained on scikit-learn's handwritten digits (8x8); metric: test accuracy."""
    t0 = time.perf_counter()
    split = digits.load_split()
    config = {
        "task": "digits-cnn",
        "version": TRAIN_VERSION,
        **opts.training_config(),
        "split_seed": digits.SPLIT_SEED,
        "n_train": digits.N_TRAIN,
    }

    def train() -> dict[str, torch.Tensor]:
        with _cache.deterministic(opts.seed):
            model = DigitsCNN()
            return digits.train_classifier(
                model, split.x_train, split.y_train, epochs=opts.epochs, lr=opts.lr, batch_size=opts.batch_size,
                seed=opts.seed, progress=opts.progress, desc="digits-cnn",
            )  # fmt: skip

    model, meta = digits.load_trained("digits-cnn", DigitsCNN, config, train, opts)
    calibration = digits.calibration_batches(split.x_calibration, opts)
    metric = _cache.accuracy_metric(split.x_test, split.y_test)
    float_metric = metric(model)
    info = {
        **meta,
        "float_metric": float_metric,
        "n_params": _cache.count_params(model),
        "build_time_s": time.perf_counter() - t0,
        "n_train": len(split.x_train),
        "n_calibration": len(split.x_calibration),
        "n_test": len(split.x_test),
        "seed": opts.seed,
        "config": config,
    }
    return Task(
        name="digits-cnn",
        model=model,
        calibration=calibration,
        metric=metric,
        metric_name="accuracy",
        description=(
            f"5-layer CNN on scikit-learn's 8x8 handwritten digits; top-1 accuracy on {len(split.x_test)} "
            f"held-out test images (float: {float_metric:.4f})"
        ),
        info=info,
    )
