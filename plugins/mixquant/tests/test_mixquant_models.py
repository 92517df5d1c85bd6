"""mixquant on real model families: tiny-lm (a GPT-2 causal LM, perplexity) and a BERT encoder."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mpqcore.testing.models import search_on_bert, search_on_tiny_lm


@pytest.mark.parametrize("search_on", [search_on_tiny_lm, search_on_bert], ids=["tiny-lm", "bert"])
def test_mixquant_on_real_model_families(search_on):
    report = search_on("mixquant")
    assert report.measure_forward_passes == 0  # data-free: weight errors only
    mse = report.objective_info["mse"]
    assert set(mse) == set(report.spec.fqns)
    assert all(errors[2] >= errors[8] for errors in mse.values())
