"""The ``tiny-lm`` task: data split, tokenizer, deterministic cached training, perplexity, lower is better."""

from __future__ import annotations

import math

import pytest
import torch

import mpqcore
from mpqcore.tasks import tiny_lm

pytest.importorskip("transformers")

#: Smaller than mpqcore.testing.models.SMALL_TINY_LM: trained twice here, in a few seconds.
QUICK = {"steps": 12, "width": 32, "heads": 2, "layers": 1, "vocab_size": 400, "n_calibration": 8, "eval_windows": 8}


def test_paragraph_split_is_disjoint_and_fixed():
    paragraphs = tiny_lm.load_paragraphs()
    assert paragraphs == tiny_lm.load_paragraphs()
    assert len(paragraphs) == len(set(paragraphs)) > 1000
    train, cal, heldout = tiny_lm.split_paragraphs(paragraphs, 32, 0.1)
    assert not (set(train) & set(cal)) and not (set(train) & set(heldout)) and not (set(cal) & set(heldout))
    assert len(train) + len(cal) + len(heldout) == len(paragraphs)
    share = sum(map(len, heldout)) / sum(map(len, paragraphs))
    assert 0.1 <= share < 0.12
    with pytest.raises(mpqcore.ConfigError, match="n_calibration=5000 leaves no training text"):
        tiny_lm.split_paragraphs(paragraphs, 5000, 0.1)


def test_tokenizer_is_trained_deterministically_and_round_trips():
    train, _, _ = tiny_lm.split_paragraphs(tiny_lm.load_paragraphs(), 32, 0.1)
    a = tiny_lm.train_tokenizer(train[:300], 400)
    b = tiny_lm.train_tokenizer(train[:300], 400)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() == 400 and a.token_to_id(tiny_lm.EOT) == 0
    text = "The return statement leaves the current function call."
    assert a.decode(a.encode(text).ids) == text


def test_training_is_deterministic_and_cached(tmp_path):
    first = mpqcore.load_task("tiny-lm", cache_dir=tmp_path, **QUICK)
    assert first.info["cache_hit"] is False
    again = mpqcore.load_task("tiny-lm", cache_dir=tmp_path / "other", **QUICK)  # trained again, elsewhere
    for (name, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    cached = mpqcore.load_task("tiny-lm", cache_dir=tmp_path, **QUICK)
    assert cached.info["cache_hit"] is True
    assert cached.info["float_metric"] == first.info["float_metric"]
    other_seed = mpqcore.load_task("tiny-lm", cache_dir=tmp_path, seed=1, **QUICK)
    assert other_seed.info["cache_hit"] is False


def test_the_task_is_a_lower_is_better_perplexity(tmp_path):
    task = mpqcore.load_task("tiny-lm", cache_dir=tmp_path, **QUICK)
    assert task.higher_is_better is False and task.metric.higher_is_better is False
    assert task.metric_name == "perplexity"
    untrained = tiny_lm.make_model(tiny_lm.TinyLMOptions(**QUICK)).eval()
    # Perplexity of an untrained model is about the vocabulary size; training lowers it.
    assert task.metric(task.model) < task.metric(untrained)
    assert math.isfinite(task.info["float_metric"]) and task.info["float_metric"] > 1.0
    for batch in task.calibration:
        assert set(batch) == {"input_ids", "attention_mask"}
        mask = batch["attention_mask"]
        assert mask.shape == batch["input_ids"].shape and mask.dtype == torch.long
        assert torch.all(batch["input_ids"][mask == 0] == 0)  # right-padded with <|endoftext|>
    assert any(bool((b["attention_mask"] == 0).any()) for b in task.calibration)  # there is padding to ignore


def test_a_search_reports_the_direction(tmp_path):
    task = mpqcore.load_task("tiny-lm", cache_dir=tmp_path, **QUICK)
    report = mpqcore.search(
        task.model, task.calibration, method="hawq", bits=(2, 8), metric=task.metric,
        budget=mpqcore.Budget.average_bits(5.0), method_options={"samples": 2},
    )  # fmt: skip
    r = report.results
    assert r["metric_higher_is_better"] is False
    assert r["float_metric"] == pytest.approx(task.info["float_metric"])
    assert math.isfinite(r["metric"]) and math.isfinite(r["uniform_metric"])


def test_bad_shape_options_are_refused():
    with pytest.raises(mpqcore.ConfigError, match="width=30 must be a multiple of heads=4"):
        mpqcore.load_task("tiny-lm", width=30, heads=4)
    with pytest.raises(mpqcore.ConfigError, match="steps"):
        mpqcore.load_task("tiny-lm", steps=0)


@pytest.mark.slow
def test_the_default_task_trains_well_within_budget():
    task = mpqcore.load_task("tiny-lm")
    info = task.info
    assert info["n_params"] < 2_000_000
    # An untrained model sits near the vocabulary size (1024); the trained one far below it.
    assert info["float_metric"] < info["config"]["vocab_size"] / 10
    if not info["cache_hit"]:
        assert info["train_cpu_time_s"] < 2 * 2 * 60  # two cores for about two minutes
