"""Small CNNs of different shapes trained on the digits, for checking sensitivity methods on unseen models.

``digits-cnn`` is the one CNN the project's methods were tuned on; a method that only
works there is overfitted. :data:`SHAPES` are five more, each trained with its own seed
on the same fixed split as the digits tasks (:mod:`mpqcore.tasks.digits`) and cached
like every task (:mod:`mpqcore.tasks._cache`, a few seconds of CPU each the first time):

- ``plain6``: six layers, no BatchNorm (4 convolutions, 2 linear; the shape of issue 14's
  unseen CNN).
- ``bn4``: three convolutions with BatchNorm and a linear head.
- ``residual``: a stem, two residual blocks with BatchNorm (one with a 1x1 shortcut), a head.
- ``wide3``: three layers, the convolutions wide (64 and 128 channels).
- ``deep8``: eight narrow layers, no BatchNorm.

``small_cnn_task(shape)`` returns a :class:`mpqcore.Task` (metric: accuracy on the 400
held-out test images; calibration: the 256 calibration images in batches of 64).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from mpqcore.tasks import Task, _cache, digits

__all__ = ["SEEDS", "SHAPES", "make_small_cnn", "small_cnn_task"]

#: Bump when an architecture or the training changes, so caches retrain.
TRAIN_VERSION = 1


class _Plain(nn.Module):
    def __init__(self, convs: list[tuple[int, int]], pools: set[int], hidden: list[int], bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        size = 8
        for i, (cin, cout) in enumerate(convs):
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
            if i in pools:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        dims = [convs[-1][1] * size * size, *hidden, 10]
        head: list[nn.Module] = []
        for i in range(len(dims) - 1):
            head.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                head.append(nn.ReLU())
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = _Block(16, 16, 1)
        self.block2 = _Block(16, 32, 2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def _plain6() -> nn.Module:
    return _Plain([(1, 16), (16, 32), (32, 32), (32, 64)], {1, 3}, [48])


def _bn4() -> nn.Module:
    return _Plain([(1, 24), (24, 48), (48, 48)], {0, 2}, [], bn=True)


def _wide3() -> nn.Module:
    return _Plain([(1, 64), (64, 128)], {0, 1}, [])


def _deep8() -> nn.Module:
    return _Plain([(1, 12), (12, 12), (12, 24), (24, 24), (24, 24), (24, 32)], {1, 3, 5}, [32])


_BUILDERS = {"plain6": _plain6, "bn4": _bn4, "residual": _Residual, "wide3": _wide3, "deep8": _deep8}
#: The shapes, in a fixed order.
SHAPES: tuple[str, ...] = tuple(_BUILDERS)
#: Each shape's training seed (its own, so no two share an initialisation stream).
SEEDS: dict[str, int] = {name: 101 + 17 * i for i, name in enumerate(SHAPES)}


def make_small_cnn(shape: str) -> nn.Module:
    """The untrained model of ``shape`` (one of :data:`SHAPES`)."""
    if shape not in _BUILDERS:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return _BUILDERS[shape]()


@functools.cache
def small_cnn_task(shape: str, *, epochs: int = 25, lr: float = 3e-3) -> Task:
    """``shape`` trained on the digits with its own seed (cached on disk and per process)."""
    seed = SEEDS.get(shape, 0)
    model = make_small_cnn(shape)
    split = digits.load_split()
    config = {"task": f"small-cnn-{shape}", "version": TRAIN_VERSION, "seed": seed, "epochs": epochs, "lr": lr}

    def train() -> dict[str, torch.Tensor]:
        with _cache.deterministic(seed):
            fresh = make_small_cnn(shape)
            return digits.train_classifier(
                fresh, split.x_train, split.y_train, epochs=epochs, lr=lr, batch_size=64, seed=seed
            )

    state, _ = _cache.load_or_train(f"small-cnn-{shape}", config, train)
    model.load_state_dict(state)
    model.eval()
    calibration = [split.x_calibration[i : i + 64] for i in range(0, len(split.x_calibration), 64)]
    metric = _cache.accuracy_metric(split.x_test, split.y_test)
    return Task(
        name=f"small-cnn-{shape}",
        model=model,
        calibration=calibration,
        metric=metric,
        metric_name="accuracy",
        description=f"small CNN {shape!r} on the digits (seed {seed}); top-1 accuracy on 400 held-out test images",
        info={"seed": seed, "float_metric": metric(model), "n_params": _cache.count_params(model)},
    )
