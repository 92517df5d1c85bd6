"""alps on real model families: tiny-lm, whose perplexity is lower-is-better, and a BERT encoder."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import mpqcore
from mpqcore.testing.models import search_on_bert, search_on_tiny_lm, tiny_lm_task


def test_alps_drop_is_the_perplexity_rise_on_tiny_lm():
    # A drop is score(base) - score(layer moved); for a perplexity the score is minus it,
    # so the drop is the rise in perplexity (before: its fall, so the worst layer looked best).
    task = tiny_lm_task()
    meas = mpqcore.measure(
        task.model,
        task.calibration,
        method="alps",
        bits=(2, 8),
        metric=task.metric,
        method_options={"tie_break": "none", "use_metric": True},
    )
    ev, drops = meas.evaluator, meas.objective.info["drop"]
    base = dict.fromkeys(meas.spec.fqns, 8)
    for fqn, drop in drops.items():
        assert drop[2] == pytest.approx(ev.metric({**base, fqn: 2}) - ev.metric(base), rel=1e-9, abs=1e-12)
    assert max(d[2] for d in drops.values()) > 0
    search_on_tiny_lm("alps")


def test_alps_finetuning_on_bert_whose_pooler_the_loss_never_reads():
    report = search_on_bert("alps", {"finetune_steps": 2})
    assert report.objective_info["score"] == "loss"
