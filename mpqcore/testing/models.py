"""Real model families for tests: a small ``tiny-lm`` and a small ``BertModel``, built once per process.

Both need ``transformers`` (``pip install "mpqcore[lm]"``); a test module that uses
them starts with ``pytest.importorskip("transformers")``.

- :func:`tiny_lm_task`: the built-in ``tiny-lm`` task with :data:`SMALL_TINY_LM`'s
  options (a GPT-2 of two 64-wide blocks trained for a few seconds, cached like every
  task): Hugging Face dict batches with padding, ``ModelOutput`` logits ``[N, T, V]``
  (the per-token KL default loss) and a lower-is-better metric, held-out perplexity.
- :func:`small_bert`: a randomly initialised ``transformers.BertModel`` and padded dict
  batches: ``last_hidden_state`` (the cosine default loss) and a pooler output that
  the loss never reads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch

import mpqcore
from mpqcore.problem import allocation_violations
from mpqcore.protocols import TaskLike

__all__ = ["SMALL_TINY_LM", "search_on_bert", "search_on_tiny_lm", "small_bert", "tiny_lm_task"]

#: ``tiny-lm`` options small enough for a unit test (trained in seconds on one core).
SMALL_TINY_LM: dict[str, Any] = {
    "steps": 60,
    "width": 64,
    "heads": 2,
    "layers": 2,
    "vocab_size": 512,
    "n_calibration": 16,
    "eval_windows": 16,
}


@functools.cache
def tiny_lm_task() -> TaskLike:
    """``tiny-lm`` with :data:`SMALL_TINY_LM`, built once per process (trained once and cached)."""
    return mpqcore.load_task("tiny-lm", **SMALL_TINY_LM)


def small_bert(
    seed: int = 0, *, attn_implementation: str = "sdpa"
) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    """``(BertModel, calibration)``: 2 layers of width 32, and two padded ``{input_ids, attention_mask}`` batches.

    ``attn_implementation="eager"`` for double backward (torch's fused attention has none on CPU).
    """
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        torch.manual_seed(seed)
        model = BertModel(config).eval()
        model.set_attn_implementation(attn_implementation)
    finally:
        hf_logging.set_verbosity(verbosity)
    gen = torch.Generator().manual_seed(seed)
    calibration = []
    for lengths in ([12, 9, 5, 12], [7, 12, 3, 10]):
        ids = torch.randint(1, config.vocab_size, (len(lengths), max(lengths)), generator=gen)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        calibration.append({"input_ids": ids * mask, "attention_mask": mask})
    return model, calibration


def _checked(report: mpqcore.Report) -> mpqcore.Report:
    """``report`` after the checks every method must pass on a real model family."""
    assert set(report.allocation.bits) == set(report.spec.fqns)
    assert not allocation_violations(report.problem, report.allocation.bits)
    assert math.isfinite(report.results["loss"]) and report.results["loss"] >= 0
    assert report.model is not None
    return report


def search_on_tiny_lm(
    method: str, options: Mapping[str, Any] | None = None, *, bits: tuple[int, ...] = (2, 8), avg_bits: float = 5.0
) -> mpqcore.Report:
    """A search with ``method`` on :func:`tiny_lm_task` (its perplexity as the metric), checked."""
    task = tiny_lm_task()
    report = mpqcore.search(
        task.model, task.calibration, method=method, bits=bits, metric=task.metric,
        budget=mpqcore.Budget.average_bits(avg_bits), method_options=dict(options or {}),
    )  # fmt: skip
    assert report.results["metric_higher_is_better"] is False
    assert math.isfinite(report.results["metric"])
    return _checked(report)


def search_on_bert(
    method: str, options: Mapping[str, Any] | None = None, *, bits: tuple[int, ...] = (2, 8), avg_bits: float = 5.0
) -> mpqcore.Report:
    """A search with ``method`` on :func:`small_bert` (default loss: cosine distance of ``last_hidden_state``), checked."""
    model, calibration = small_bert()
    report = mpqcore.search(
        model, calibration, method=method, bits=bits,
        budget=mpqcore.Budget.average_bits(avg_bits), method_options=dict(options or {}),
    )  # fmt: skip
    return _checked(report)
