"""Export: the quantized model as files a runtime loads, each checked on reload.

:func:`export` turns a model and an allocation (or a :class:`~mpqcore.Report`, whose
quantizer, options and activation widths it then uses) into an
:class:`~mpqcore.exports.plan.ExportPlan`: the fake-quantized model from
:func:`mpqcore.apply` and, per quantized layer, the integer codes of
:func:`mpqcore.layer_kinds.quantize_along`. A registered export format (hook
``mpq_register_export_formats``; built in: ``packed``, ``onnx``, ``torchao``) writes
it, loads it back, and the reloaded model's outputs are compared with the
fake-quantized model's.
"""

from typing import TYPE_CHECKING

from mpqcore.lazy_imports import lazy_exports

if TYPE_CHECKING:
    from mpqcore.exports.api import (
        ExportPlan,
        ExportResult,
        PlannedLayer,
        check_export_path,
        export,
        load_packed,
        plan_export,
    )

__all__ = ["ExportPlan", "ExportResult", "PlannedLayer", "check_export_path", "export", "load_packed", "plan_export"]

# the API loads on first use: `mpq --help` builds the export options from mpqcore.exports.command without torch
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "mpqcore.exports.api"))
