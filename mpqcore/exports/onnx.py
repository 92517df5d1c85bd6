"""The ``onnx`` export: a QDQ ONNX model (opset 21) that onnxruntime runs.

The fake-quantized model is traced with ``torch.onnx.export`` (the TorchScript
exporter, which runs offline), then each quantized weight's float initializer is
replaced by ``DequantizeLinear`` of an integer initializer: ``uint4`` for widths up to
4 (opset 21 has 4-bit types), ``uint8`` up to 8, ``uint16`` up to 16; a width below its
container is stored in it and the manifest (``metadata_props["mpq"]``) says so. Scales
are per tensor or per output channel (``axis``). Activation quantization traced from
the model's :class:`~mpqcore.activations.InputQuantizer` hooks is in the graph as the
ops that compute it (a dynamic per-batch min-max: ReduceMin/Max, Div, Round, Clip).

Run it with :func:`session_options` (as :class:`OnnxModule` does): onnxruntime's
extended graph optimizations fuse ``DequantizeLinear`` + ``MatMul`` into its
``MatMulNBits`` kernel, whose default accuracy level (4) quantizes the *activations* to
int8 per block at run time. That is not the model mpq measured: on minilm it moved the
embeddings by 0.005 (cosine off by 4e-4), where a float export of the same model is
within 2e-7. :func:`session_options` sets the kernel's accuracy level to 1 (float32
compute, the same fused kernel and weights), and the manifest records the setting
under ``"session_config"``.

Not stored: grouped scales, zero points that are not integers (1-bit symmetric codes),
and recurrent weights (the exporter rewrites them into ONNX RNN/LSTM/GRU's W/R/B):
each is a :class:`~mpqcore.ConfigError` naming the layers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from mpqcore.batches import model_inputs
from mpqcore.errors import ConfigError
from mpqcore.exports.plan import ExportPlan

__all__ = ["SESSION_CONFIG", "OnnxFormat", "OnnxModule", "container", "session_options"]

OPSET = 21
#: onnxruntime session settings an export runs under: the fused low-bit MatMul computes in float32
#: (its default, accuracy level 4, quantizes activations to int8; see the module docstring).
SESSION_CONFIG = {"session.qdq_matmulnbits_accuracy_level": "1"}


def session_options(threads: int | None = None) -> Any:
    """``onnxruntime.SessionOptions`` that run an mpq ONNX export as mpq measured it (:data:`SESSION_CONFIG`)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def container(bits: int) -> str:
    """The ONNX integer type a width is stored in."""
    return "uint4" if bits <= 4 else "uint8" if bits <= 8 else "uint16"


class OnnxModule(nn.Module):
    """An onnxruntime session called like the model it was exported from (tensors in, tensors out)."""

    def __init__(self, path: str | Path, input_names: list[str]):
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self.input_names = input_names

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        values = [*args, *(kwargs[n] for n in self.input_names[len(args) :] if n in kwargs)]
        feed = {n: v.detach().cpu().numpy() for n, v in zip(self.input_names, values, strict=False)}
        outs = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _initializer(onnx: Any, name: str, values: np.ndarray, kind: str) -> Any:
    if kind == "uint4":
        flat = values.reshape(-1).astype(np.uint8)
        if flat.size % 2:
            flat = np.concatenate([flat, np.zeros(1, np.uint8)])
        raw = (flat[0::2] | (flat[1::2] << 4)).tobytes()
        return onnx.helper.make_tensor(name, onnx.TensorProto.UINT4, list(values.shape), raw, raw=True)
    return onnx.numpy_helper.from_array(values.astype(np.uint8 if kind == "uint8" else np.uint16), name)


@attrs.frozen
class OnnxFormat:
    """A QDQ ONNX model (opset 21): integer weights behind DequantizeLinear, run by onnxruntime."""

    name = "onnx"
    suffix = ".onnx"

    def check(self, plan: ExportPlan) -> None:
        if plan.example is None:
            raise ConfigError("export format 'onnx' traces the model: pass example= (one input batch)")
        rnn = [p.fqn for p in plan.layers if p.layer_kind == "rnn"]
        grouped = [p.fqn for p in plan.layers if p.group_size is not None]
        fractional = [
            f"{p.fqn} ({p.bits} bits)"
            for p in plan.layers
            if not bool((p.quantized.zero_point == p.quantized.zero_point.round()).all())
        ]
        wide = [f"{p.fqn} ({p.bits} bits)" for p in plan.layers if p.bits > 16]
        problems = []
        if rnn:
            problems.append(f"recurrent weights {rnn[:5]} (the exporter rewrites them into ONNX RNN/LSTM/GRU's W/R/B)")
        if grouped:
            problems.append(f"grouped scales {grouped[:5]}")
        if fractional:
            problems.append(f"zero points that are not integers {fractional[:5]} (DequantizeLinear's are integers)")
        if wide:
            problems.append(f"widths above 16 {wide[:5]}")
        if problems:
            raise ConfigError(
                "export format 'onnx' cannot store "
                + "; ".join(problems)
                + ". It stores per-tensor and per-channel integer weights of 1-16 bits in uint4/uint8/uint16 "
                "(linear, conv, conv-transpose, embedding, attention, transformers Conv1D); leave these layers out "
                "with exclude=, or use format 'packed'"
            )

    def write(self, plan: ExportPlan, path: Path) -> dict[str, Any]:
        import onnx

        args, kwargs = model_inputs(plan.fake, plan.example)
        names = [f"input{i}" for i in range(len(args))] + list(kwargs)
        values = [*args, *kwargs.values()]
        dynamic = {n: {i: f"{n}_d{i}" for i in range(min(v.dim(), 2 if not v.is_floating_point() else 1))}
                   for n, v in zip(names, values, strict=True)}  # fmt: skip
        plan.fake.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter (offline, keeps initializer names) says it is legacy and that its
            # newest opset is 20: the ops it writes are unchanged at 21, which the 4-bit types need
            warnings.simplefilter("ignore")
            torch.onnx.export(
                plan.fake, (*args, kwargs) if kwargs else tuple(args), str(path), dynamo=False, opset_version=OPSET,
                do_constant_folding=False, input_names=names, dynamic_axes=dynamic,
            )  # fmt: skip
        model = onnx.load(str(path))
        graph = model.graph
        inits = {i.name: i for i in graph.initializer}
        layers: dict[str, Any] = {}
        missing = []
        new_nodes = []
        for p in plan.layers:
            key = next((k for k in p.state_keys if k in inits), None)
            if key is None:
                missing.append(p.fqn)
                continue
            q = p.quantized
            kind = container(p.bits)
            codes = q.codes.detach().numpy()
            per_axis = q.scale.numel() > 1
            scale = q.scale.detach().float().reshape(-1).numpy() if per_axis else q.scale.detach().float().reshape(())
            zp = q.zero_point.detach().round().to(torch.int64).reshape(-1 if per_axis else ()).numpy()
            if zp.shape != scale.shape:  # a symmetric quantizer's scalar zero point: one per channel
                zp = np.broadcast_to(zp, scale.shape).copy()
            graph.initializer.remove(inits[key])
            graph.initializer.extend(
                [
                    _initializer(onnx, f"{key}::codes", codes, kind),
                    onnx.numpy_helper.from_array(np.asarray(scale, np.float32), f"{key}::scale"),
                    _initializer(onnx, f"{key}::zero_point", np.asarray(zp), kind),
                ]
            )
            attrs_ = {"axis": int(q.axis if q.axis is not None else p.axis)} if per_axis else {}
            inputs = [f"{key}::codes", f"{key}::scale", f"{key}::zero_point"]
            node = onnx.helper.make_node("DequantizeLinear", inputs, [key], name=f"{key}::dequantize")
            node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs_.items())
            new_nodes.append(node)
            layers[p.fqn] = {"bits": p.bits, "container": kind, "initializer": key, "per_channel": per_axis}
        if missing:
            raise ConfigError(
                f"export format 'onnx': the exporter did not keep the weights of {missing[:5]} as initializers "
                "(it folded or rewrote them), so they cannot be stored as integers; leave them out with exclude="
            )
        for node in reversed(new_nodes):
            graph.node.insert(0, node)
        manifest = {
            "format": "mpq-onnx",
            "opset": OPSET,
            "quantizer": plan.quantizer,
            "layers": layers,
            "act_bits": dict(plan.act_bits),
            "activations": "traced as ops (dynamic per-tensor min-max)" if plan.act_bits else "float",
            "inputs": names,
            "session_config": dict(SESSION_CONFIG),
            "bias_correction": plan.bias_manifest(),  # corrected biases: the graph's float biases
        }
        model.metadata_props.append(onnx.StringStringEntryProto(key="mpq", value=json.dumps(manifest)))
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return manifest

    def load(self, plan: ExportPlan, path: Path) -> nn.Module:
        import onnx

        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            names = json.loads(meta["mpq"])["inputs"]
        except Exception as exc:
            raise ConfigError(f"{str(path)!r} is not an mpq ONNX export (truncated or corrupted?): {exc}") from None
        return OnnxModule(path, names)
