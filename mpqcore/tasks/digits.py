"""scikit-learn's handwritten digits: a fixed train / calibration / test split.

``load_digits()`` ships 1797 real 8x8 grey-scale digits (0..16) with scikit-learn, so
nothing is downloaded. Pixels are scaled to [0, 1]. The split is a fixed seeded
permutation: 1141 training, 256 calibration and 400 test images, pairwise disjoint, so
the calibration batches never contain an image the metric scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from mpqcore.options import option
from mpqcore.tasks import TaskOptions, _cache

__all__ = [
    "N_CALIBRATION",
    "N_TEST",
    "N_TRAIN",
    "SPLIT_SEED",
    "DigitsSplit",
    "DigitsTrainingOptions",
    "calibration_batches",
    "load_split",
    "load_trained",
    "train_classifier",
    "upsample",
]

N_TRAIN = 1141
N_CALIBRATION = 256
N_TEST = 400
#: The permutation seed of the split; fixed, so every task and seed sees the same split.
SPLIT_SEED = 20240


@attrs.frozen
class DigitsTrainingOptions(TaskOptions):
    """The options of a task trained on the digits (each task gives ``epochs`` and ``lr`` its defaults)."""

    epochs: int = option(int, minimum=1, kw_only=True, help="training epochs")
    lr: float = option(float, greater_than=0.0, kw_only=True, help="Adam learning rate")
    batch_size: int = option(int, default=64, minimum=1, help="training batch size")
    calibration_batch_size: int = option(int, default=64, minimum=1, help="images per calibration batch")
    retrain: bool = option(bool, default=False, help="train again even when a cached model exists")

    def training_config(self) -> dict[str, Any]:
        """The options that decide the trained weights (part of the cache key)."""
        return {"seed": self.seed, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size}


def load_trained(
    name: str,
    make_model: Callable[[], torch.nn.Module],
    config: dict[str, Any],
    train: Callable[[], dict[str, torch.Tensor]],
    opts: DigitsTrainingOptions,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model trained by ``train`` (or its cached weights), in eval mode on ``opts.device``, and the cache's metadata."""
    state, meta = _cache.load_or_train(name, config, train, cache_dir=opts.cache_dir, retrain=opts.retrain)
    model = make_model()
    model.load_state_dict(state)
    model.eval().to(opts.device)
    return model, meta


def calibration_batches(x: torch.Tensor, opts: DigitsTrainingOptions) -> list[torch.Tensor]:
    """``x`` in batches of ``opts.calibration_batch_size``, on ``opts.device``."""
    step = opts.calibration_batch_size
    return [x[i : i + step].to(opts.device) for i in range(0, len(x), step)]


@attrs.frozen(eq=False)
class DigitsSplit:
    """Images ``[N, 1, 8, 8]`` in [0, 1], int64 labels, and the indices into ``load_digits()``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_calibration: torch.Tensor
    y_calibration: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    idx_train: np.ndarray
    idx_calibration: np.ndarray
    idx_test: np.ndarray


def load_split() -> DigitsSplit:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    n = len(y)
    assert n == N_TRAIN + N_CALIBRATION + N_TEST, n
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    tr, ca, te = perm[:N_TRAIN], perm[N_TRAIN : N_TRAIN + N_CALIBRATION], perm[N_TRAIN + N_CALIBRATION :]
    t = torch.from_numpy
    return DigitsSplit(
        x[t(tr)], y[t(tr)], x[t(ca)], y[t(ca)], x[t(te)], y[t(te)],
        np.sort(tr), np.sort(ca), np.sort(te),
    )  # fmt: skip


def upsample(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Bilinear upsampling of ``[N, 1, 8, 8]`` images to ``[N, 1, size, size]``."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def train_classifier(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: bool = False,
    desc: str = "training",
) -> dict[str, torch.Tensor]:
    """Adam with cosine decay and cross-entropy on CPU; returns the state dict.

    Call inside :func:`mpqcore.tasks._cache.deterministic`: shuffling and augmentation use
    their own generator seeded with ``seed``, so two runs give bit-identical weights.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(range(epochs), desc=desc, unit="epoch")
    for _ in bar if bar is not None else range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx]
            if augment is not None:
                xb = augment(xb, gen)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if bar is not None:
            bar.set_postfix(loss=f"{total / len(x):.4f}")
    model.eval()
    return model.state_dict()
