"""The entry point mpq loads (group ``mpqcore``): registers the ``eagl`` method."""

from mpqcore.hookspecs import hookimpl


@hookimpl
def mpq_register_methods(registry) -> None:
    registry.add("eagl", "mpqcore_eagl.method:EntropyGuided")  # imported when used: listing plugins needs no torch
