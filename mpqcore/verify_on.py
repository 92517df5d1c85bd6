"""What the guard measures its candidates on: a name list the command line needs before torch loads."""

from __future__ import annotations

__all__ = ["VERIFY_ON"]

#: What the guard measures the candidates on.
VERIFY_ON = ("held-out", "calibration", "metric")
