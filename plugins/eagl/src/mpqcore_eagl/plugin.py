"""The entry point mpq loads (group ``mpqcore``): registers the ``eagl`` method."""

from mpqcore.hookspecs import hookimpl
from mpqcore_eagl.method import EntropyGuided


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("eagl", EntropyGuided)
