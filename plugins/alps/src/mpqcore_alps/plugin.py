"""The entry point mpq loads (group ``mpqcore``): registers the ``alps`` method."""

from mpqcore.hookspecs import hookimpl
from mpqcore_alps.method import AccuracyAwareSelection


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("alps", AccuracyAwareSelection)
