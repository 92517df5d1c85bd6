"""Core tests run with built-ins only: installed plugins are not auto-loaded here.

Each test starts and ends with a fresh process-wide plugin set, so a test that builds
its own (or changes the environment) cannot leak into the next one.
"""

from __future__ import annotations

import pytest

from mpqcore.plugins import ENV_DISABLE_AUTOLOAD, reset_plugins


@pytest.fixture(autouse=True)
def _builtin_plugins_only(monkeypatch):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    reset_plugins()
    yield
    reset_plugins()
