"""mpq: mixed-precision quantization, from sensitivity to allocation to report."""

from mpqcore.errors import ConfigError, InfeasibleError, MethodError, MpqError, PluginError, ProblemTooLargeError
from mpqcore.hookspecs import hookimpl
from mpqcore.plugins import get_plugins
from mpqcore.types import Allocation, Budget, LayerInfo, ModelSpec, Objective, Problem

__all__ = [
    "Allocation",
    "Budget",
    "ConfigError",
    "InfeasibleError",
    "LayerInfo",
    "MethodError",
    "ModelSpec",
    "MpqError",
    "Objective",
    "PluginError",
    "Problem",
    "ProblemTooLargeError",
    "get_plugins",
    "hookimpl",
]
