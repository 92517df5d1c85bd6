"""mpq against Sony's Model Compression Toolkit (MCT 2.6.1) on small CNNs, weights only.

    python benchmarks/bench_mct.py                          # digits-cnn and the six zoo CNNs
    python benchmarks/bench_mct.py --models plain3 --budgets 3
    python benchmarks/bench_mct.py --no-mct                 # the mpq half only

Models: digits-cnn and the six CNNs of :mod:`mpqcore.testing.digits_zoo`, all trained on
scikit-learn's digits; calibration is the 256 calibration images (batches of 64), the
metric top-1 accuracy on the 400 test images. Budgets: 2.5, 3 and 4 average bits per
weight from {2,3,4,5,6,8}; activations stay float on both sides.

- mpq: :func:`mpqcore.sweep` with the default method, guard and quantizer
  (``mpqcore.DEFAULT_QUANTIZER``), without, with ``bias_correction=True`` and with
  ``bias_correction="guard"`` (corrected where the guard measured it lower; "(bc)" in the table);
  beside it the uniform allocation at the budget (the widest candidate width that fits),
  scored by each measurement's evaluator (so also with bias correction in the second).
- MCT: ``mct.ptq.pytorch_post_training_quantization`` with mixed precision under
  ``ResourceUtilization(weights_memory=avg_bits * params / 8)`` (bytes of the Conv/Linear
  kernels), MCT's default ``QuantizationConfig`` (MSE thresholds, symmetric per-channel
  kernels, weights bias correction on) and default ``MixedPrecisionQuantizationConfig``.
  The target platform is MCT's IMX500 v1.0 TPC regenerated with kernel candidates
  {2,3,4,5,6,8} and ``enable_activation_quantization=False`` in every op config, so
  no activation is quantized (the exported model has no activation quantizers). The
  average bits reported are counted from the exported model's weight quantizers; each
  budget also gets MCT at the uniform width (with and without its bias correction).
- Diagnostics: whether MCT chose mpq's very allocation; each side's levels per channel and
  weight error at the uniform widths; and mpq's search with :class:`MCTGridMSE` (MCT's
  grid inside mpq, not an mpq quantizer) to tell whether MCT's grid is what mpq lacks.

MCT is not a project dependency and would downgrade the project environment's
matplotlib, so its half runs in its own interpreter (``--mct-python``, default
``$MPQ_MCT_PYTHON`` or /work/mctenv/bin/python) as a subprocess of this script. Make it
with ``python -m venv --system-site-packages /work/mctenv`` and
``/work/mctenv/bin/pip install model-compression-toolkit==2.6.1`` (torch comes from the
system site). Without it the script exits with status 2 before any work, unless
``--no-mct``. One torch thread in both halves.

Writes benchmarks/results/mct.json and mct.md (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGETS = (2.5, 3.0, 4.0)
BITS = (2, 3, 4, 5, 6, 8)
MCT_VERSION = "2.6.1"
DEFAULT_MCT_PYTHON = os.environ.get("MPQ_MCT_PYTHON", "/work/mctenv/bin/python")
MAKE_VENV = (
    "python -m venv --system-site-packages /work/mctenv && "
    f"/work/mctenv/bin/pip install model-compression-toolkit=={MCT_VERSION}"
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the models and data, the same in both halves --------------------------------------------


def model_names() -> list[str]:
    from mpqcore.testing.digits_zoo import ZOO

    return ["digits-cnn", *(entry.name for entry in ZOO)]


def load_models(names: list[str]):
    """``(name, float model, calibration batches, accuracy metric)`` for each of ``names``."""
    import mpqcore
    from mpqcore.tasks import _cache, digits
    from mpqcore.testing.digits_zoo import ZOO, load_zoo_model

    split = digits.load_split()
    calibration = [split.x_calibration[i : i + 64] for i in range(0, len(split.x_calibration), 64)]
    accuracy = _cache.accuracy_metric(split.x_test, split.y_test)
    zoo = {entry.name: entry for entry in ZOO}
    for name in names:
        model = mpqcore.load_task("digits-cnn").model if name == "digits-cnn" else load_zoo_model(zoo[name], split)
        yield name, model.eval(), calibration, accuracy


def weight_params(model) -> int:
    """Weights of the Conv/Linear kernels (what both sides quantize; biases stay float)."""
    from torch import nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)))


def uniform_width(budget: float) -> int:
    """The widest candidate width within ``budget`` average bits."""
    return max(b for b in BITS if b <= budget)


# -- the mpq half (the project environment) ---------------------------------------------------


class MCTGridMSE:
    """A diagnostic, not one of mpq's quantizers: MCT's symmetric grid inside mpq.

    Full signed range (codes -2^(b-1) .. 2^(b-1)-1 times ``threshold / 2^(b-1)``: 4 levels
    at 2 bits where mpq's narrow range has 3) and the threshold per output channel with
    the least squared error among ``absmax * r``, r in 0.3..2.0 (69 steps; the top of the
    range only reaches ``threshold * (1 - 2^(1-b))``). On digits-cnn its weight error
    equals MCT's to four digits, so it tells whether MCT's grid is what mpq lacks.
    """

    name = "mct-grid-mse"

    @property
    def layout(self):
        from mpqcore.layout import Layout

        return Layout("channel", symmetric=True)

    def quantize(self, weight, bits: int):
        import torch

        from mpqcore.quantizers import QuantizedTensor

        w = weight.detach()
        rows = w.reshape(w.shape[0], -1)
        shape = (w.shape[0],) + (1,) * (w.dim() - 1)
        n = 2 ** (bits - 1)

        def grid(threshold):
            scale = torch.where(threshold > 0, threshold / n, torch.ones_like(threshold)).reshape(shape)
            codes = torch.clamp(torch.round(w / scale), -n, n - 1) + n
            return QuantizedTensor(codes.to(torch.int32), scale, torch.full_like(scale, float(n)), bits, 0)

        absmax = rows.abs().amax(1)
        best_err = torch.full_like(absmax, float("inf"))
        best = absmax.clone()
        for r in torch.linspace(0.3, 2.0, 69, dtype=w.dtype):
            err = ((grid(absmax * r).dequantize() - w) ** 2).reshape(w.shape[0], -1).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, absmax * r, best)
        return grid(best)


#: The mpq configurations: row key, bias correction, quantizer (None: mpq's default).
MPQ_CONFIGS = (
    ("mpq", False, None),
    ("mpq_bc", True, None),
    ("mpq_bcg", "guard", None),
    ("grid", False, "mct-grid"),
    ("grid_bc", True, "mct-grid"),
)


def mpq_half(names: list[str], budgets: list[float]) -> list[dict[str, Any]]:
    import mpqcore

    rows: list[dict[str, Any]] = []
    for name, model, calibration, accuracy in load_models(names):
        row_of = {
            b: {"model": name, "budget": b, "float": accuracy(model), "params": weight_params(model)} for b in budgets
        }
        for key, bc, grid in MPQ_CONFIGS:
            t0 = time.perf_counter()
            meas, points = mpqcore.sweep(
                model, calibration, bits=BITS, budgets=[mpqcore.Budget.average_bits(b) for b in budgets],
                metric=accuracy, bias_correction=bc,
                quantizer=MCTGridMSE() if grid else mpqcore.DEFAULT_QUANTIZER,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            ev = meas.evaluator
            for b, p in zip(budgets, points, strict=True):
                row = row_of[b]
                uniform = {layer.fqn: uniform_width(b) for layer in meas.spec.layers}
                row[f"{key}_uniform"] = ev.metric(uniform)
                row["uniform_bits"] = uniform_width(b)
                if p.allocation is None:
                    row[key] = None
                    row[f"{key}_error"] = p.error
                    continue
                g = p.results["guard"]
                by_name = {c["name"]: c for c in g["candidates"]}
                row[key] = p.results["metric"]
                row[f"{key}_bits"] = by_name[g["chosen"]]["average_bits"]
                row[f"{key}_guard"] = "kept" if g["kept"] else f"replaced by {g['chosen']}"
                row[f"{key}_allocation"] = dict(by_name[g["chosen"]]["bits"])
                row[f"{key}_sweep_s"] = seconds
                row[f"{key}_bc_chosen"] = bool(p.results["bias_correction"]["chosen"])
            log(f"mpq {name} {key}: {seconds:.1f} s")
        rows.extend(row_of[b] for b in budgets)
    return rows


# -- the MCT half (its own interpreter) -------------------------------------------------------


def weights_only_tpc(bits):
    """MCT's IMX500 v1.0 target platform with kernel candidates ``bits`` and no activation quantization."""
    from model_compression_toolkit.target_platform_capabilities.constants import KERNEL_ATTR, WEIGHTS_N_BITS
    from model_compression_toolkit.target_platform_capabilities.tpc_models.imx500_tpc.v1_0 import tpc as imx500

    base, _, default = imx500.get_op_quantization_configs()
    base = base.clone_and_edit(enable_activation_quantization=False)
    default = default.clone_and_edit(enable_activation_quantization=False)
    options = [base.clone_and_edit(attr_to_edit={KERNEL_ATTR: {WEIGHTS_N_BITS: b}}) for b in sorted(bits, reverse=True)]
    # the base (MCT's reference for mixed precision) is the widest candidate, 8 bits as in MCT's own TPC
    return imx500.generate_tpc(
        default_config=default, base_config=options[0], mixed_precision_cfg_list=options, name="weights-only"
    )


def mct_chosen_bits(qmodel) -> tuple[dict[str, int], dict[str, int], int]:
    """Per layer the kernel's bits and weight count in MCT's exported model, and how many activation quantizers it has."""
    from mct_quantizers import PytorchActivationQuantizationHolder, PytorchQuantizationWrapper

    bits: dict[str, int] = {}
    params: dict[str, int] = {}
    for name, module in qmodel.named_modules():
        if isinstance(module, PytorchQuantizationWrapper):
            for attr, quantizer in module.weights_quantizers.items():
                key = module_name(name) if attr == "weight" else f"{module_name(name)}.{attr}"
                bits[key] = int(quantizer.num_bits)
                params[key] = getattr(module.layer, attr).numel()
    holders = sum(isinstance(m, PytorchActivationQuantizationHolder) for m in qmodel.modules())
    return bits, params, holders


def module_name(mct_name: str) -> str:
    """The model's module name of an MCT node name: ``_2_conv1`` -> ``2.conv1``, ``fc1`` -> ``fc1``, and a
    convolution with its BatchNorm folded in, ``_0_bn`` -> ``0`` (the zoo's and digits-cnn's names)."""
    return mct_name.removesuffix("_bn").lstrip("_").replace("_", ".")


def weight_error(model, qmodel, bits: int) -> dict[str, Any] | None:
    """Relative squared weight error (sum over kernels) of MCT's quantized kernels and of mpq's default quantizer at
    ``bits``, and the most levels a channel uses in each; ``None`` when MCT folded BatchNorm into a kernel (its
    kernels then are not the model's)."""
    import torch
    from mct_quantizers import PytorchQuantizationWrapper
    from torch import nn

    from mpqcore.plugins import get_plugins
    from mpqcore.quantizers import DEFAULT_QUANTIZER

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    _, quantizer = get_plugins().quantizers.resolve(DEFAULT_QUANTIZER, None)
    modules = dict(model.named_modules())
    err = {"mct": 0.0, "mpq": 0.0}
    levels = {"mct": 0, "mpq": 0}
    norm = 0.0
    for name, wrapper in qmodel.named_modules():
        if not isinstance(wrapper, PytorchQuantizationWrapper):
            continue
        w = modules[module_name(name)].weight.detach()
        quantized = {
            "mct": wrapper.weights_quantizers["weight"](wrapper.layer.weight).detach(),
            "mpq": quantizer.quantize(w, bits).dequantize(),
        }
        for side, q in quantized.items():
            err[side] += float(((q - w) ** 2).sum())
            levels[side] = max(levels[side], max(len(torch.unique(q[i])) for i in range(len(q))))
        norm += float((w**2).sum())
    return {
        "bits": bits,
        **{f"{k}_error": v / norm for k, v in err.items()},
        **{f"{k}_levels": v for k, v in levels.items()},
    }


def mct_half(names: list[str], budgets: list[float]) -> list[dict[str, Any]]:
    import model_compression_toolkit as mct
    import torch

    tpc = weights_only_tpc(BITS)
    uniform_tpc = {b: weights_only_tpc((uniform_width(b),)) for b in budgets}
    rows: list[dict[str, Any]] = []
    for name, model, calibration, accuracy in load_models(names):
        params = weight_params(model)

        def representative_data(calibration=calibration):
            for batch in calibration:
                yield [batch]

        for b in budgets:
            t0 = time.perf_counter()
            qmodel, info = mct.ptq.pytorch_post_training_quantization(
                copy.deepcopy(model), representative_data,
                target_resource_utilization=mct.core.ResourceUtilization(weights_memory=b * params / 8),
                core_config=mct.core.CoreConfig(mixed_precision_config=mct.core.MixedPrecisionQuantizationConfig()),
                target_platform_capabilities=tpc,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            qmodel.eval()
            with torch.no_grad():
                metric = accuracy(qmodel)
            bits, counts, holders = mct_chosen_bits(qmodel)
            # the same quantizer with every kernel at the uniform width (no mixed precision): its quantizer alone
            uniform_model, _ = mct.ptq.pytorch_post_training_quantization(
                copy.deepcopy(model), representative_data, target_platform_capabilities=uniform_tpc[b]
            )
            no_bc = mct.core.CoreConfig(quantization_config=mct.core.QuantizationConfig(weights_bias_correction=False))
            uniform_no_bc, _ = mct.ptq.pytorch_post_training_quantization(
                copy.deepcopy(model), representative_data, core_config=no_bc,
                target_platform_capabilities=uniform_tpc[b],
            )  # fmt: skip
            with torch.no_grad():
                uniform_metric = accuracy(uniform_model.eval())
                uniform_no_bc_metric = accuracy(uniform_no_bc.eval())
                errors = weight_error(model, uniform_model, uniform_width(b))
            total = sum(counts.values())
            rows.append(
                {
                    "model": name, "budget": b, "mct": metric, "mct_uniform": uniform_metric,
                    "mct_uniform_no_bc": uniform_no_bc_metric, "mct_params": total,
                    "weight_error": errors,
                    "mct_bits": sum(bits[k] * counts[k] for k in bits) / total, "mct_allocation": bits,
                    "mct_weights_memory": float(info.final_resource_utilization.weights_memory),
                    "mct_budget_bytes": b * params / 8, "mct_activation_quantizers": holders, "mct_s": seconds,
                }
            )  # fmt: skip
            print(
                f"MCT {name} {b:g}: {metric:.4f} at {rows[-1]['mct_bits']:.3f} bits, {seconds:.1f} s", file=sys.stderr
            )
    return rows


def mct_missing(python: str) -> str:
    """Why ``python`` cannot run the MCT half (empty when it can)."""
    if not Path(python).exists():
        return f"no interpreter at {python}"
    probe = subprocess.run(
        [python, "-c", "import model_compression_toolkit as m; print(m.__version__)"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        return f"{python} cannot import model_compression_toolkit: {last}"
    if probe.stdout.strip() != MCT_VERSION:
        return f"{python} has model_compression_toolkit {probe.stdout.strip()}, this benchmark is for {MCT_VERSION}"
    return ""


def run_mct_half(python: str, names: list[str], budgets: list[float]) -> list[dict[str, Any]]:
    """The MCT half in ``python``; its chatter (MCT's logger, the MIP solver) goes to a log shown on failure."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mct.json"
        cmd = [python, str(Path(__file__).resolve()), "--mct-half", str(out), "--models", *names, "--budgets"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([*cmd, *map(str, budgets)], capture_output=True, text=True, env=env, cwd=tmp)
        if done.returncode != 0:
            raise RuntimeError(f"the MCT half failed ({done.returncode}):\n{done.stderr[-4000:]}")
        for line in done.stderr.splitlines():
            if line.startswith("MCT "):
                log(line)
        return json.loads(out.read_text())


# -- the tables --------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    ("float", "float acc"),
    ("mpq_uniform", "mpq uniform"),
    ("mpq_bc_uniform", "mpq uniform + bc"),
    ("mpq", "mpq, no bc"),
    ("mpq_bc", "mpq + bias correction"),
    ("mpq_bcg", "mpq default (bc by the guard)"),
    ("mct_uniform", "MCT uniform"),
    ("mct", "MCT"),
)


def mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if len(present) == len(values) and present else None


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = "| model | budget | " + " | ".join(label for _, label in COLUMNS)
    head += " | mpq bits (no bc / + bc) | MCT's avg bits | MCT's allocation is mpq's |"
    lines = [
        "# mpq vs Sony's MCT on small CNNs (weights only)",
        "",
        f"Generated by `python benchmarks/bench_mct.py` on {meta['date']} ({meta['wall_s']:.0f} s; "
        f"torch {meta['torch']}, MCT {meta.get('mct_version') or 'not run'}, 1 torch thread). Accuracy on the "
        "400 digits test images; calibration the 256 calibration images; candidates {2,3,4,5,6,8}; "
        "activations float on both sides. mpq: `mpqcore.sweep` with the default method "
        f"(`hawq`), the never-worse guard and the default quantizer (`{meta['quantizer']}`); *uniform* is "
        "every layer at the widest width within the budget, scored without and with bias correction; mpq's "
        "default bias correction is the guard's choice (`bias_correction='auto'`, the *bc by the guard* column). "
        "MCT: mixed-precision PTQ under a weights memory of avg bits x params / 8 bytes, its default "
        "MSE per-channel symmetric thresholds and weights bias correction, activations not quantized "
        "(see the script's docstring). *bits* columns: the achieved average bits per weight "
        "(MCT's counted from its exported model's weight quantizers); the last column says where MCT chose "
        "the very allocation mpq returned (no bc, + bc, both), so that the difference there is the quantizer's.",
        "",
        head,
        "|" + "---|" * (len(COLUMNS) + 5),
    ]
    for r in rows:
        cells = [fmt(r.get(k)) for k, _ in COLUMNS]
        mpq_bits = f"{fmt(r.get('mpq_bits'), 2)} / {fmt(r.get('mpq_bc_bits'), 2)}"
        if r.get("mpq_bcg_bc_chosen"):
            cells[[k for k, _ in COLUMNS].index("mpq_bcg")] += " (bc)"
        lines.append(
            f"| {r['model']} | {r['budget']:g} | "
            + " | ".join(cells)
            + f" | {mpq_bits} | {fmt(r.get('mct_bits'), 3)} | {same_allocation(r)} |"
        )
    for b in sorted({r["budget"] for r in rows}):
        sub = [r for r in rows if r["budget"] == b]
        lines.append(
            f"| **mean** | {b:g} | " + " | ".join(fmt(mean([r.get(k) for r in sub])) for k, _ in COLUMNS) + " | | | |"
        )
    lines.append(
        "| **mean** | all | " + " | ".join(fmt(mean([r.get(k) for r in rows])) for k, _ in COLUMNS) + " | | | |"
    )
    if all(r.get("mct") is not None for r in rows):
        lines += ["", *comparison(rows), "", *weight_error_table(rows)]
    if any(r.get("grid") is not None for r in rows):
        lines += ["", *grid_table(rows)]
    lines += ["", 'What these figures say: benchmarks/README.md, section "mpq against Sony\'s MCT".']
    return "\n".join(lines) + "\n"


def same_allocation(row: dict[str, Any]) -> str:
    """Which of mpq's returned allocations MCT's equals: ``no bc``, ``+ bc``, ``both``, or ``no``."""
    mct = row.get("mct_allocation")
    if mct is None:
        return "—"
    same = [label for key, label in (("mpq", "no bc"), ("mpq_bc", "+ bc")) if row.get(f"{key}_allocation") == mct]
    return "both" if len(same) == 2 else (same[0] if same else "no")


def weight_error_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each side's quantizer alone at the uniform widths: accuracy without and with bias correction, levels per
    channel and relative squared weight error (the last two on models without BatchNorm)."""
    seen = {(r["model"], r["uniform_bits"]): r for r in rows if r.get("mct_uniform") is not None}
    if not seen:
        return []
    out = [
        "The quantizers alone, every layer at the uniform width: test accuracy without / with bias correction, "
        "the most levels a channel uses, and the relative squared weight error sum ||W_q - W||² / sum ||W||² "
        "over the kernels (mpq's default quantizer against MCT's kernels in its uniform model; on models "
        "without BatchNorm only, since MCT folds BatchNorm into the kernels).",
        "",
        "| model | bits | MCT acc (no bc / bc) | mpq acc (no bc / bc) | levels MCT / mpq | weight error MCT "
        "| weight error mpq | mpq / MCT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (model, bits), r in seen.items():
        e = r.get("weight_error")
        errors = (
            f"{e['mct_levels']} / {e['mpq_levels']} | {e['mct_error']:.4f} | {e['mpq_error']:.4f} | "
            f"{e['mpq_error'] / e['mct_error']:.2f}"
            if e
            else "(BatchNorm folded) | — | — | —"
        )
        out.append(
            f"| {model} | {bits} | {fmt(r.get('mct_uniform_no_bc'))} / {fmt(r['mct_uniform'])} | "
            f"{fmt(r['mpq_uniform'])} / {fmt(r['mpq_bc_uniform'])} | {errors} |"
        )
    return out


def grid_table(rows: list[dict[str, Any]]) -> list[str]:
    """Means per budget of mpq with MCT's grid (the diagnostic quantizer) beside mpq's default and MCT."""
    cols = (
        ("mpq_uniform", "mpq uniform"), ("grid_uniform", "MCT grid uniform"), ("mpq", "mpq"), ("grid", "MCT grid"),
        ("mpq_bc_uniform", "mpq uniform + bc"), ("grid_bc_uniform", "MCT grid uniform + bc"),
        ("mpq_bc", "mpq + bc"), ("grid_bc", "MCT grid + bc"), ("mct", "MCT"),
    )  # fmt: skip
    out = [
        "Diagnostic: mpq's search with MCT's grid (`MCTGridMSE` in the script: full signed range, MSE threshold per "
        "channel; not an mpq quantizer) instead of its default quantizer, same models, budgets and guard. Means over "
        "the models:",
        "",
        "| budget | " + " | ".join(label for _, label in cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for b in [*sorted({r["budget"] for r in rows}), None]:
        sub = [r for r in rows if b in (None, r["budget"])]
        where = "all" if b is None else f"{b:g}"
        out.append(f"| {where} | " + " | ".join(fmt(mean([r.get(k) for r in sub])) for k, _ in cols) + " |")
    return out


def comparison(rows: list[dict[str, Any]]) -> list[str]:
    """MCT minus each mpq configuration, in test images (400), per budget and over all cells."""
    out = ["MCT minus mpq, in test images of 400 (positive: MCT better):", ""]
    for key, label in (
        ("mpq", "mpq, no bc"),
        ("mpq_bc", "mpq + bias correction"),
        ("mpq_bcg", "mpq default (bc by the guard)"),
    ):
        for b in [*sorted({r["budget"] for r in rows}), None]:
            diffs = [
                round((r["mct"] - r[key]) * 400) for r in rows if r.get(key) is not None and b in (None, r["budget"])
            ]
            if not diffs:
                continue
            wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            where = "all budgets" if b is None else f"{b:g} bits"
            out.append(
                f"- vs {label}, {where}: mean {sum(diffs) / len(diffs):+.2f} images "
                f"({sum(diffs) / len(diffs) / 4:+.2f} accuracy points) over {len(diffs)} cells; MCT better in {wins}, "
                f"worse in {losses}, tied in {len(diffs) - wins - losses}; from {min(diffs):+d} to {max(diffs):+d}."
            )
    below = [
        (label, sum(r[key] < r[uniform] - 1e-9 for r in have), len(have))
        for key, uniform, label in (
            ("mct", "mct_uniform", "MCT"), ("mpq", "mpq_uniform", "mpq, no bc"),
            ("mpq_bc", "mpq_bc_uniform", "mpq + bias correction"), ("mpq_bcg", "mpq_uniform", "mpq default (bc by the guard)"),
        )
        if (have := [r for r in rows if r.get(key) is not None])  # a configuration not run is not "0 of n"
    ]  # fmt: skip
    out.append(
        "- Below its own uniform allocation at the same budget (same quantizer): "
        + "; ".join(f"{label} in {n} of {total} cells" for label, n, total in below)
        + "."
    )
    return out


# -- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = model_names()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=names, choices=names, metavar="MODEL", help=f"of {names}")
    ap.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), help="average weight bits")
    ap.add_argument("--mct-python", default=DEFAULT_MCT_PYTHON, help="the interpreter with MCT installed")
    ap.add_argument("--no-mct", action="store_true", help="run the mpq half only (MCT columns empty)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where mct.json and mct.md go")
    ap.add_argument("--render-only", action="store_true", help="rewrite mct.md from the mct.json in --out")
    ap.add_argument("--mct-half", type=Path, help=argparse.SUPPRESS)  # internal: run the MCT half, write JSON here
    args = ap.parse_args(argv)
    for b in args.budgets:
        if not min(BITS) <= b <= max(BITS):
            ap.error(f"--budgets: {b:g} is outside the candidate widths {min(BITS)}..{max(BITS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse_args(argv)
    if args.mct_half is not None:
        args.mct_half.write_text(json.dumps(mct_half(args.models, args.budgets)))
        return 0
    if args.render_only:
        saved = json.loads((args.out / "mct.json").read_text())
        (args.out / "mct.md").write_text(render(saved["rows"], saved["meta"]))
        return 0
    if not args.no_mct and (why := mct_missing(args.mct_python)):
        print(
            f"bench_mct: MCT is not available: {why}.\nMake its own venv (it must not touch the project "
            f"environment): {MAKE_VENV}\nthen pass --mct-python PATH (or set MPQ_MCT_PYTHON), or run with "
            "--no-mct for the mpq half only.",
            file=sys.stderr,
        )
        return 2
    import mpqcore

    t0 = time.perf_counter()
    rows = mpq_half(args.models, args.budgets)
    meta: dict[str, Any] = {"torch": torch.__version__, "quantizer": mpqcore.DEFAULT_QUANTIZER}
    if not args.no_mct:
        mct_rows = {(r["model"], r["budget"]): r for r in run_mct_half(args.mct_python, args.models, args.budgets)}
        for r in rows:
            r.update(mct_rows[(r["model"], r["budget"])])
            if r["mct_params"] != r["params"]:
                log(f"warning: {r['model']}: MCT quantized {r['mct_params']} weights, mpq {r['params']}")
        meta["mct_version"] = MCT_VERSION
    meta.update(date=datetime.now(UTC).strftime("%Y-%m-%d"), wall_s=time.perf_counter() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mct.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (args.out / "mct.md").write_text(render(rows, meta))
    log(f"wrote {args.out / 'mct.md'} and mct.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
