"""clado on real model families: tiny-lm (a GPT-2 causal LM, perplexity) and a BERT encoder."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mpqcore.testing.models import search_on_bert, search_on_tiny_lm


def test_clado_on_tiny_lm():
    report = search_on_tiny_lm("clado", {"pairs": "window"})
    assert report.measure_forward_passes > 0  # losses of single and paired quantizations


def test_clado_on_bert_whose_pooler_the_loss_never_reads():
    report = search_on_bert("clado", {"pairs": "window"})
    assert report.measure_forward_passes > 0
