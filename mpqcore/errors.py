"""The exceptions mpq raises. Every message names what was wrong and what is valid."""

from __future__ import annotations

__all__ = ["ConfigError", "InfeasibleError", "MethodError", "MpqError", "PluginError", "ProblemTooLargeError"]


class MpqError(Exception):
    """Base class of every error mpq raises on purpose."""


class ConfigError(MpqError, ValueError):
    """Bad input from the user: an unknown name, a bad value, a malformed file."""


class PluginError(MpqError):
    """A plugin failed to load, registered a clashing name, or its hook raised.

    ``plugin`` names the plugin (and its distribution and entry point when known).
    """

    def __init__(self, message: str, *, plugin: str | None = None):
        super().__init__(message)
        self.plugin = plugin


class MethodError(PluginError):
    """A sensitivity method raised or returned a malformed objective."""


class InfeasibleError(MpqError):
    """No allocation meets every budget; ``cheapest`` maps each budget to its least achievable cost."""

    def __init__(
        self, message: str, *, cheapest: dict[str, float] | None = None, budgets: dict[str, float] | None = None
    ):
        super().__init__(message)
        self.cheapest = dict(cheapest or {})
        self.budgets = dict(budgets or {})


class ProblemTooLargeError(MpqError):
    """A solver was asked a problem above the size it handles (brute force, DP grid)."""
