"""``mpq export``: a task's model, quantized by a saved report (or a search run now), in an export format.

``mpq export --task digits-cnn --report mpq-out/run1/report.json --format packed --path m.safetensors``
reads the allocation, quantizer, its options and the activation widths from the report
(written by ``mpq search --out``); without ``--report`` it runs the search the other
options describe (as ``mpq search`` does, ``--out`` writing its report too) and exports
its report. The path and the format are checked before any work; the export is
reloaded and compared with the fake-quantized model on the task's first calibration
batch, and its metric is printed beside the report's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mpqcore.errors import ConfigError

__all__ = ["add_export_args", "cmd_export", "read_report"]


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, help="a registered export format: packed, onnx, torchao, ...")
    p.add_argument("--path", required=True, help="the file to write (checked before any work)")
    p.add_argument("--report", default=None, help="a report.json from `mpq search --out`; default: search now")


def read_report(path: str | Path) -> dict[str, Any]:
    """``{bias_correction, allocation, quantizer, quantizer_options, act_bits, metric}`` from a report.json
    (and the bias correction file beside it), checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        allocation = {str(k): int(v) for k, v in data["allocation"].items()}
    except FileNotFoundError:
        raise ConfigError(f"--report {str(path)!r} does not exist; write one with `mpq search --out DIR`") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"--report {str(path)!r} is not an mpq report.json: {type(exc).__name__}: {exc}") from None
    return {
        "bias_correction": _bias_correction_of(path, data.get("bias_correction")),
        "allocation": allocation,
        "quantizer": data.get("quantizer") or "minmax-per-tensor",
        "quantizer_options": dict(data.get("quantizer_options") or {}),
        "act_bits": {str(k): int(v) for k, v in (data.get("act_bits") or {}).items()} or None,
        "metric": (data.get("results") or {}).get("metric"),
    }


def _bias_correction_of(path: Path, summary: Any) -> Any:
    """The report's bias correction, read from the file beside report.json; ``None`` when it has none."""
    if not summary:
        return None
    from mpqcore.bias_correction import BiasCorrection
    from mpqcore.report import BIAS_CORRECTION_FILE

    beside = path.parent / BIAS_CORRECTION_FILE
    if not beside.exists():
        raise ConfigError(
            f"--report {str(path)!r} was searched with bias correction, but {BIAS_CORRECTION_FILE} (the mean inputs "
            f"the corrected biases are computed from, written beside report.json by `mpq search --out`) is missing; "
            "copy it with the report, or leave out --report to search and export in one run"
        )
    value = BiasCorrection.load(beside)
    if sorted(value.means) != sorted(summary.get("corrected", ())) or value.policy != summary.get("policy"):
        raise ConfigError(
            f"{str(beside)!r} does not belong to {str(path)!r}: it corrects {len(value.means)} layers with policy "
            f"{value.policy!r}, the report {len(summary.get('corrected', ()))} with {summary.get('policy')!r}"
        )
    return value


def cmd_export(args: argparse.Namespace, search: Any, task_of: Any) -> int:
    """Run ``mpq export``; ``search(args, task)`` runs a search, ``task_of(args)`` builds the task."""
    import mpqcore
    from mpqcore.exports import check_export_path
    from mpqcore.plugins import get_plugins

    get_plugins().export_formats.get(args.format)  # an unknown format, listing the valid ones, before any work
    check_export_path(args.path)
    task = task_of(args)
    if args.report:
        saved = read_report(args.report)
        source: Any = saved["allocation"]
        options = {k: saved[k] for k in ("quantizer", "quantizer_options", "act_bits", "bias_correction")}
        reported = saved["metric"]
    else:
        report = search(args, task)
        source, options, reported = report, {}, report.results.get("metric")
    result = mpqcore.export(
        task.model, source, format=args.format, path=args.path, example=task.calibration[0], metric=task.metric,
        **options,
    )  # fmt: skip
    print(
        f"wrote {result.path}: {result.bytes:,} bytes ({result.size_ratio:.3f} x the predicted {result.predicted_bytes:,}); "
        f"reloaded: max abs diff {result.max_abs_diff:.3g} from the fake-quantized model"
        + (", exact" if result.exact else "")
    )
    if result.metric is not None:
        print(f"  {task.metric_name}: {result.metric:.4f} reloaded, {result.reference_metric:.4f} fake-quantized"
              + (f", {reported:.4f} reported" if reported is not None else ""))  # fmt: skip
    return 0
