"""pytest plugin for mpq's own test runs: one torch thread, so numbers repeat.

torch's results depend on the number of intra-op threads (a reduction split across two
threads sums in another order), and on a loaded 2-core machine extra threads only
contend. ``MPQ_TEST_THREADS`` overrides the count. Enabled from ``pyproject.toml``
(``-p mpqcore.testing.pytest_plugin``), so the core's and every plugin's tests get it.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("MPQ_TEST_THREADS", "1")))


def pytest_report_header(config: pytest.Config) -> str:
    import torch

    return f"mpq: torch {torch.__version__}, {torch.get_num_threads()} thread(s) (MPQ_TEST_THREADS)"
