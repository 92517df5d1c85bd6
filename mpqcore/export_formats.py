"""The built-in export formats, registered by name: each is imported only when used.

``packed`` (:mod:`mpqcore.exports.packed`), ``onnx`` (:mod:`mpqcore.exports.onnx`) and
``torchao`` (:mod:`mpqcore.exports.torchao`) import torch; registering them as
``"module:Name"`` keeps ``mpq plugins`` and ``mpq solve`` free of it.
"""

from __future__ import annotations

from mpqcore.hookspecs import hookimpl

__all__ = ["BUILTIN_FORMATS", "mpq_register_export_formats"]

#: Format name -> its factory, ``module:Name``.
BUILTIN_FORMATS = {
    "packed": "mpqcore.exports.packed:PackedFormat",
    "onnx": "mpqcore.exports.onnx:OnnxFormat",
    "torchao": "mpqcore.exports.torchao:TorchaoFormat",
}


@hookimpl
def mpq_register_export_formats(registry) -> None:
    for name, factory in BUILTIN_FORMATS.items():
        registry.add(name, factory)
