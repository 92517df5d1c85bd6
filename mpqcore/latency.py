"""The ``measured-latency`` cost model: each layer's exported kernel, timed here at every width.

For a layer whose weight's channel-first view is ``[C, K]`` and which performs ``M``
MACs per example, the kernel is what the ``onnx`` export runs: ``DequantizeLinear`` of
the weight's integer initializer (``uint4``/``uint8``/``uint16``, per-channel scales)
feeding a ``Gemm`` of ``N = M / (C * K)`` input vectors (a convolution as its im2col
matrix product). It is built as a one-layer ONNX model and timed in onnxruntime on
this machine (``warmup`` runs, then the median of ``repeats``), in milliseconds per
example. Timings are cached on disk under the mpq cache dir (``MPQ_CACHE_DIR``, else
``~/.cache/mpq``), keyed by the device (processor, onnxruntime version, threads), the
container and the shape, so a latency budget needs no hand-written table. A lookup (an
embedding: 0 MACs) costs 0. :meth:`mpqcore.Report.write` writes the measured table
beside the report as ``latency.csv`` (columns ``layer,bits,latency``: the ``latency``
cost model reads it back).

What it shows on a CPU (measured on the 2-core machine mpq is developed on, digits-cnn):
lower widths are **not** faster. 2 and 4 bits share the ``uint4`` container and so one
kernel (the same time), and the ``uint4`` kernel took 1.0-2.3x the ``uint8`` one: for
``uint8`` onnxruntime's CPU provider runs the constant ``DequantizeLinear`` once and
then a float ``Gemm``, where the 4-bit path was observed to cost more per call. A
latency budget on a CPU therefore pushes widths up to 8, not down; the cost model is
meant for runtimes with integer kernels per width (the same code times them there).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from mpqcore.errors import ConfigError
from mpqcore.hookspecs import hookimpl
from mpqcore.options import option
from mpqcore.types import LayerInfo

__all__ = ["MeasuredLatency", "device_key"]


def device_key(threads: int) -> dict[str, Any]:
    import onnxruntime

    return {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
    }


def _container(bits: int) -> str:
    return "uint4" if bits <= 4 else "uint8" if bits <= 8 else "uint16" if bits <= 16 else "float32"


def _kernel(c: int, k: int, container: str) -> bytes:
    """A one-layer ONNX model: y = x @ DequantizeLinear(codes, scale, zp).T, codes [c, k] in ``container``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    types = {"uint4": TensorProto.UINT4, "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16}
    top = {"uint4": 16, "uint8": 256, "uint16": 65536}[container]
    codes = rng.integers(0, top, size=(c, k))
    if container == "uint4":
        flat = codes.reshape(-1).astype(np.uint8)
        flat = np.concatenate([flat, np.zeros(flat.size % 2, np.uint8)])
        w = helper.make_tensor("codes", types["uint4"], [c, k], (flat[0::2] | (flat[1::2] << 4)).tobytes(), raw=True)
        zp = helper.make_tensor("zp", types["uint4"], [c], bytes([0x88] * math.ceil(c / 2)), raw=True)
    else:
        dtype = np.uint8 if container == "uint8" else np.uint16
        w = numpy_helper.from_array(codes.astype(dtype), "codes")
        zp = numpy_helper.from_array(np.full(c, top // 2, dtype), "zp")
    scale = numpy_helper.from_array(rng.uniform(1e-3, 1e-2, c).astype(np.float32), "scale")
    nodes = [
        helper.make_node("DequantizeLinear", ["codes", "scale", "zp"], ["w"], axis=0),
        helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c])],
        initializer=[w, scale, zp],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


@attrs.frozen
class MeasuredLatency:
    """Milliseconds per example of each layer's exported kernel at each width, timed here (onnxruntime), cached."""

    warmup: int = option(int, default=3, minimum=0, help="untimed runs before timing")
    repeats: int = option(int, default=15, minimum=1, help="timed runs; the median is kept")
    threads: int = option(int, default=1, minimum=1, help="onnxruntime intra-op threads")
    cache_dir: str | None = option(str, default=None, optional=True, help="where timings are cached")
    unit = "ms"
    _memo: dict = attrs.field(factory=dict, init=False, repr=False, eq=False)

    def _cache_file(self) -> Path:
        from mpqcore.cache_dir import resolve_cache_dir

        return resolve_cache_dir(self.cache_dir) / "latency.json"

    def cost(self, layer: LayerInfo, bits: int) -> float:
        if layer.macs <= 0:
            if not layer.macs_measured:
                raise ConfigError(
                    f"cost model 'measured-latency': layer {layer.fqn!r} has no MAC count; introspect with a batch"
                )
            return 0.0
        shape = layer.weight_shape or (layer.params,)
        c = int(shape[layer.axis]) if len(shape) > 1 else 1
        k = max(1, layer.params // c)
        n = max(1, round(layer.macs / (c * k)))
        key = json.dumps({**device_key(self.threads), "container": _container(bits), "c": c, "k": k, "n": n})
        if key not in self._memo:
            self._memo.update(self._read())
        if key not in self._memo:
            self._memo[key] = self._time(c, k, n, _container(bits))
            self._write()
        return float(self._memo[key])

    def _read(self) -> dict[str, float]:
        try:
            return {str(k): float(v) for k, v in json.loads(self._cache_file().read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _write(self) -> None:
        from mpqcore.files import atomic_write_json

        path = self._cache_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {**self._read(), **self._memo})
        except OSError:  # a read-only cache only costs re-measuring
            pass

    def _time(self, c: int, k: int, n: int, container: str) -> float:
        import onnxruntime

        from mpqcore.exports.onnx import session_options

        options = session_options(self.threads)  # the kernels the onnx export runs
        session = onnxruntime.InferenceSession(_kernel(c, k, container), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
        for _ in range(self.warmup):
            session.run(None, {"x": x})
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            session.run(None, {"x": x})
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000.0)


@hookimpl
def mpq_register_cost_models(registry) -> None:
    registry.add("measured-latency", MeasuredLatency)
