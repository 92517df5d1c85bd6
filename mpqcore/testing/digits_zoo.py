"""Small CNNs of different shapes trained on scikit-learn's digits, for the never-worse checks.

Models mpq's methods were not tuned on: different depths and widths, with and without
BatchNorm and residual connections. Each trains on the digits' training split with its
own seed in a few seconds on one CPU thread, and is cached like the built-in tasks
(:mod:`mpqcore.tasks._cache`, under the mpq cache directory).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch
from torch import nn

from mpqcore.tasks import _cache, digits

__all__ = ["ZOO", "ZooModel", "load_zoo_model"]

#: Bump when an architecture or the training changes, so caches retrain.
ZOO_VERSION = 1


class _Residual(nn.Module):
    def __init__(self, channels: int, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
        self.bn1: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.bn2: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


def _conv(cin: int, cout: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    return [*layers, nn.ReLU()]


def plain3() -> nn.Module:
    """Two convolutions and one linear layer, no BatchNorm."""
    return nn.Sequential(*_conv(1, 8, False), *_conv(8, 16, False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))


def bn5() -> nn.Module:
    """Four conv-BatchNorm-ReLU blocks and a linear head."""
    return nn.Sequential(
        *_conv(1, 12, True), *_conv(12, 24, True), nn.MaxPool2d(2), *_conv(24, 24, True), *_conv(24, 32, True),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def residual_bn() -> nn.Module:
    """A stem, two residual blocks with BatchNorm, a linear head."""
    return nn.Sequential(
        *_conv(1, 16, True), _Residual(16, True), nn.MaxPool2d(2), _Residual(16, True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def residual_plain() -> nn.Module:
    """A stem and one residual block without BatchNorm, two linear layers."""
    return nn.Sequential(
        *_conv(1, 12, False), _Residual(12, False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(192, 48), nn.ReLU(),
        nn.Linear(48, 10),
    )  # fmt: skip


def wide_mlp_head() -> nn.Module:
    """One wide convolution, then a three-layer MLP head (most weights in Linear layers)."""
    return nn.Sequential(
        *_conv(1, 32, False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 96), nn.ReLU(), nn.Linear(96, 48),
        nn.ReLU(), nn.Linear(48, 10),
    )  # fmt: skip


def deep7() -> nn.Module:
    """Six narrow convolutions and a linear head, no BatchNorm."""
    return nn.Sequential(
        *_conv(1, 8, False), *_conv(8, 8, False), *_conv(8, 12, False), nn.MaxPool2d(2), *_conv(12, 12, False),
        *_conv(12, 16, False), *_conv(16, 16, False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


@attrs.frozen
class ZooModel:
    name: str
    make: Callable[[], nn.Module]
    seed: int
    epochs: int = 12
    lr: float = 3e-3


#: The zoo: each model with its own training seed.
ZOO: tuple[ZooModel, ...] = (
    ZooModel("plain3", plain3, seed=11),
    ZooModel("bn5", bn5, seed=12),
    ZooModel("residual-bn", residual_bn, seed=13),
    ZooModel("residual-plain", residual_plain, seed=14),
    ZooModel("wide-mlp-head", wide_mlp_head, seed=15),
    ZooModel("deep7", deep7, seed=16),
)


def load_zoo_model(entry: ZooModel, split: digits.DigitsSplit | None = None) -> nn.Module:
    """``entry``'s model trained on the digits (cached), in eval mode on the CPU."""
    split = split or digits.load_split()
    config = {
        "zoo": entry.name, "version": ZOO_VERSION, "seed": entry.seed, "epochs": entry.epochs, "lr": entry.lr,
        "split_seed": digits.SPLIT_SEED,
    }  # fmt: skip

    def train() -> dict[str, torch.Tensor]:
        with _cache.deterministic(entry.seed):
            return digits.train_classifier(
                entry.make(), split.x_train, split.y_train, epochs=entry.epochs, lr=entry.lr, batch_size=64,
                seed=entry.seed,
            )  # fmt: skip

    state, _ = _cache.load_or_train(f"zoo-{entry.name}", config, train)
    model = entry.make()
    model.load_state_dict(state)
    return model.eval()
