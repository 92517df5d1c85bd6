"""eagl on real model families: tiny-lm (a GPT-2 causal LM, perplexity) and a BERT encoder."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mpqcore.testing.models import search_on_bert, search_on_tiny_lm


def test_eagl_on_tiny_lm_is_data_free():
    report = search_on_tiny_lm("eagl")
    assert report.measure_forward_passes == 0  # entropies of the weights only


def test_eagl_on_bert():
    report = search_on_bert("eagl")
    assert report.measure_forward_passes == 0
