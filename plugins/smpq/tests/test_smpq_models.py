"""smpq on real model families: tiny-lm, whose perplexity is lower-is-better, and a BERT encoder."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from mpqcore.testing.models import search_on_bert, search_on_tiny_lm

SMALL = {"min_permutations": 4, "max_permutations": 8, "max_evaluations": 60}


def test_smpq_scores_tiny_lm_by_its_perplexity_the_right_way():
    report = search_on_tiny_lm("smpq", {**SMALL, "use_metric": True})
    # Upgrades from 2 to 8 bits lower the perplexity: as a score (minus perplexity) they add value.
    assert report.objective_info["value"] == "metric"
    assert sum(report.objective_info["shapley"].values()) > 0


def test_smpq_on_bert():
    report = search_on_bert("smpq", SMALL)
    assert sum(report.objective_info["shapley"].values()) > 0  # upgrades lower the cosine distance
