"""The entry point mpq loads (group ``mpqcore``): registers the ``alps`` method."""

from mpqcore.hookspecs import hookimpl


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add(
        "alps", "mpqcore_alps.method:AccuracyAwareSelection"
    )  # imported when used: listing plugins needs no torch
