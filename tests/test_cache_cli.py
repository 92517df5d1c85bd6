"""``mpq cache`` and ``cache_max_bytes`` on caches real searches wrote: list, info, clear, prune,
least recently used first, never a directory in use, never anything outside the measurements directory."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import mpqcore
from mpqcore import Budget, ConfigError
from mpqcore.cache_dir import measurements_dir, resolve_cache_dir
from mpqcore.cache_limits import ENV_CACHE_MAX_SIZE, check_cache_max_bytes, parse_age, parse_size
from mpqcore.cache_lock import LOCK_NAME
from mpqcore.cached_models import cached_models, prune
from mpqcore.cli import main
from mpqcore.measurement_cache import MeasurementCache, model_digest
from mpqcore.plugins import ENV_DISABLE_AUTOLOAD
from mpqcore.testing import digits_task

BUILTINS = mpqcore.PluginSet(autoload=False)
_TRAINED = resolve_cache_dir()  # where the trained task models are, before a test moves MPQ_CACHE_DIR


@pytest.fixture(scope="module")
def task():
    torch.set_num_threads(1)
    return digits_task()  # loaded before each test moves MPQ_CACHE_DIR (the trained model stays where it is)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MPQ_CACHE_DIR", str(tmp_path / "mpq"))
    monkeypatch.delenv(ENV_CACHE_MAX_SIZE, raising=False)
    return tmp_path / "mpq"


def _variant(task, i):
    """The task's model with one weight nudged: another digest, so another cache directory."""
    model = copy.deepcopy(task.model)
    if i:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] += 1e-3 * i
    return model


def _search(task, model, **kw):
    return mpqcore.search(
        model, task.calibration, method="hawq", budget=Budget.average_bits(4), cache=True, guard=False,
        plugins=BUILTINS, **kw,
    )  # fmt: skip


def _dir(model):
    return measurements_dir() / model_digest(model)[:24]


def _cli(capsys, *argv):
    code = main(["cache", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _set_last_use(model, when):
    os.utime(_dir(model) / LOCK_NAME, (when, when))


@pytest.fixture
def three(task, home):
    """Three models' caches, written by three searches, last used in the order 1, 2, 0."""
    models = [_variant(task, i) for i in range(3)]
    for m in models:
        _search(task, m)
    now = time.time()
    for m, age in zip(models, (100, 300, 200), strict=True):
        _set_last_use(m, now - age)
    return models


def test_list_and_info_describe_what_searches_left(task, three, capsys):
    code, out, _ = _cli(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["digest"] for r in rows] == [_dir(m).name for m in (three[0], three[2], three[1])]  # most recent first
    n_params = sum(p.numel() for p in task.model.parameters())
    for r in rows:
        assert r["description"] == f"{type(task.model).__name__}, {n_params:,} parameters"
        assert r["evaluations"] > 0 and r["size_bytes"] > 0
    code, out, _ = _cli(capsys, "list")
    assert code == 0 and "DigitsCNN" in out and "3 model(s)" in out
    code, out, _ = _cli(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and info["models"] == 3
    assert info["measurements_bytes"] == sum(r["size_bytes"] for r in rows)
    assert info["measurements"] == str(measurements_dir()) and info["max_bytes"] is None


def test_clear_refuses_nothing_asked_and_unknown_digests_before_removing_any(three, capsys):
    known = _dir(three[0]).name
    code, _, err = _cli(capsys, "clear")
    assert code == 2 and "DIGEST" in err and "--all" in err
    code, _, err = _cli(capsys, "clear", known, "feedbeef")
    assert code == 2 and "'feedbeef' names no cached model" in err and known in err
    code, _, err = _cli(capsys, "clear", "abc")
    assert code == 2 and "at least 4 characters" in err
    assert len(cached_models(measurements_dir())) == 3  # nothing removed
    code, out, _ = _cli(capsys, "clear", known[:8])
    assert code == 0 and "1 removed" in out
    assert not _dir(three[0]).exists() and _dir(three[1]).exists()


def test_clear_all_never_touches_anything_but_model_directories(three, home, tmp_path, capsys):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    where = measurements_dir()
    (where / "link").symlink_to(outside, target_is_directory=True)
    (where / "notes").mkdir()  # not a cache: no manifest, no lock
    (where / "notes" / "a.txt").write_text("mine")
    (where / "file.txt").write_text("mine")
    (home / "digits-cnn-0123.pt").write_bytes(b"a trained task model")
    code, out, _ = _cli(capsys, "clear", "--all")
    assert code == 0 and "3 removed" in out
    assert cached_models(where) == []
    assert (outside / "manifest.json").exists() and (where / "notes" / "a.txt").exists()
    assert (where / "file.txt").exists() and (where / "link").is_symlink()
    assert (home / "digits-cnn-0123.pt").exists()


def test_prune_removes_the_least_recently_used_first(three, capsys):
    sizes = {m.digest: m.size_bytes for m in cached_models(measurements_dir())}
    newest_two = sizes[_dir(three[0]).name] + sizes[_dir(three[2]).name]
    code, out, _ = _cli(capsys, "prune", "--max-size", f"{newest_two + 50}B")
    assert code == 0 and "1 removed" in out
    assert not _dir(three[1]).exists() and _dir(three[0]).exists() and _dir(three[2]).exists()
    code, out, _ = _cli(capsys, "prune", "--older-than", "150s")
    assert code == 0 and not _dir(three[2]).exists() and _dir(three[0]).exists()


def test_prune_needs_a_bound_and_refuses_bad_ones(home, capsys):
    code, _, err = _cli(capsys, "prune")
    assert code == 2 and "--max-size" in err and "--older-than" in err
    for bad in ("5XB", "-1MB", "lots"):
        with pytest.raises(SystemExit) as exc:
            main(["cache", "prune", f"--max-size={bad}"])
        assert exc.value.code == 2
        assert "500MB" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cache", "prune", "--older-than", "30"])
    assert "no unit" in capsys.readouterr().err


def test_a_search_bound_prunes_other_models_least_recently_used_first_never_its_own(task, three, home):
    newest = cached_models(measurements_dir())[-1]
    fourth = _variant(task, 3)
    report = _search(task, fourth, cache_max_bytes=newest.size_bytes + 1)  # room for little but its own
    assert report.cache["stored"] > 0
    assert sorted(report.cache["pruned"]) == sorted(_dir(m).name for m in three)  # the report says what went
    left = {m.digest for m in cached_models(measurements_dir())}
    assert _dir(fourth).name in left  # the one in use stays, even alone over the bound
    assert not any(_dir(m).exists() for m in three)


def test_the_environment_bound_applies_when_no_option_is_given(task, three, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_MAX_SIZE, "0")
    _search(task, three[1])
    assert [m.digest for m in cached_models(measurements_dir())] == [_dir(three[1]).name]


@pytest.mark.parametrize("bad", [-1, True, float("nan"), "5 parsecs", [1]])
def test_a_bad_bound_is_refused_before_any_work(task, home, bad):
    with pytest.raises(ConfigError, match="cache_max_bytes"):
        _search(task, task.model, cache_max_bytes=bad)
    assert not measurements_dir().exists()


def test_a_bad_environment_bound_names_the_variable(task, home, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_MAX_SIZE, "big")
    with pytest.raises(ConfigError, match=r"\$MPQ_CACHE_MAX_SIZE 'big' is not a size"):
        _search(task, task.model)
    assert not measurements_dir().exists()


def test_sizes_and_ages_read_in_one_place():
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5 GiB") == 3 * 2**29
    assert parse_size("2kb") == 2000 and parse_size("3KiB") == 3072 and parse_size("7") == 7
    assert check_cache_max_bytes("1MiB") == 2**20 and check_cache_max_bytes(10) == 10
    assert parse_age("30d") == 30 * 86400 and parse_age("2w") == 14 * 86400
    for bad in ("", "MB", "1e999GB", "1..2MB"):
        with pytest.raises(ConfigError, match="unit"):
            parse_size(bad)


def test_a_directory_open_in_this_process_is_kept(task, three, capsys):
    held = MeasurementCache(_dir(three[1]), model_key=model_digest(three[1]), layers=[])
    try:
        done = prune(measurements_dir(), max_bytes=0)
        assert [m.digest for m in done.in_use] == [_dir(three[1]).name]
        assert _dir(three[1]).exists() and not _dir(three[0]).exists()
        code, out, _ = _cli(capsys, "clear", "--all")
        assert code == 1 and "another process has it open" in out
    finally:
        held.close()
    code, out, _ = _cli(capsys, "clear", "--all")
    assert code == 0 and not _dir(three[1]).exists()


def test_an_old_manifest_gains_a_description(task, home):
    key = model_digest(task.model)
    MeasurementCache(_dir(task.model), model_key=key, layers=["a"]).close()  # as written before descriptions
    assert cached_models(measurements_dir())[0].description is None
    _search(task, task.model)
    manifest = json.loads((_dir(task.model) / "manifest.json").read_text())
    assert manifest["description"].startswith(type(task.model).__name__) and manifest["model"] == key


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mpqcore.measurement_cache import MeasurementCache
    directory, ready, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    store = MeasurementCache(directory, model_key="k" * 64, layers=["w"])
    i = 0
    while not stop.exists() or i < 200:
        store.put(f"key{i}", float(i))
        i += 1
        if i == 20:
            ready.write_text("")
        time.sleep(0.001)
    assert len(store) == i and store.get("key7") == 7.0, (len(store), i)
    store.close()
    print(i)
    """
)


def test_prune_never_removes_a_directory_a_process_is_writing(home, tmp_path):
    writing = measurements_dir() / ("a" * 24)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(writing), str(ready), str(stop)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), "the writer never started"
        for _ in range(20):  # prune again and again while it writes
            done = prune(measurements_dir(), max_bytes=0)
            assert [m.digest for m in done.in_use] == [writing.name] and done.removed == ()
            assert (writing / "manifest.json").exists()
        stop.write_text("")
        out, _ = proc.communicate(timeout=120)
    finally:
        stop.write_text("")
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and int(out) >= 200
    done = prune(measurements_dir(), max_bytes=0)  # closed: now it goes
    assert [m.digest for m in done.removed] == [writing.name] and not writing.exists()


def test_a_killed_process_leaves_no_mark(home, tmp_path):
    writing = measurements_dir() / ("b" * 24)
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(writing), str(ready), str(stop)], env=env)
    deadline = time.monotonic() + 120
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    done = prune(measurements_dir(), max_bytes=0)
    assert [m.digest for m in done.removed] == [writing.name]


def test_the_search_flag_bounds_the_directory_and_refuses_bad_sizes(task, three, capsys):
    argv = ["search", "--task", "digits-cnn", "--task-option", f"cache_dir={_TRAINED}", "--quiet", "--no-guard"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--cache-max-size", "lots"])
    assert exc.value.code == 2 and "--cache-max-size: size 'lots' is not a size" in capsys.readouterr().err
    assert main([*argv, "--cache-max-size", "1kB"]) == 0
    assert "2 other model(s)' measurements removed" in capsys.readouterr().out
    left = [m.digest for m in cached_models(measurements_dir())]
    assert left == [_dir(task.model).name]  # the search's own (three[0] has its weights); the two others removed


def test_an_opener_waiting_while_its_directory_is_removed_starts_a_fresh_one(task, home, monkeypatch):
    import fcntl
    import shutil
    import threading

    from mpqcore import cache_lock

    directory = _dir(task.model)
    key = model_digest(task.model)
    MeasurementCache(directory, model_key=key, layers=["w"]).close()
    waiting = threading.Event()
    real_flock = fcntl.flock

    def flock(fd, op):
        if op == fcntl.LOCK_SH:
            waiting.set()  # the opener holds the old lock file open and is about to wait for it
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    opened = []
    with cache_lock._exclusive(directory) as alone:  # a remover, half-way
        assert alone
        opener = threading.Thread(
            target=lambda: opened.append(MeasurementCache(directory, model_key=key, layers=["w"]))
        )
        opener.start()
        assert waiting.wait(60)
        gone = directory.with_name("gone")
        os.rename(directory, gone)
        shutil.rmtree(gone)
    opener.join(60)
    store = opened[0]
    store.put("k", 1.0)
    assert store.get("k") == 1.0 and (directory / "manifest.json").exists()
    assert prune(measurements_dir(), max_bytes=0).removed == ()  # and it is marked in use
    store.close()


def test_a_sweep_checks_its_bound_before_any_work(task, home):
    with pytest.raises(ConfigError, match="cache_max_bytes"):
        mpqcore.sweep(
            task.model, task.calibration, method="hawq", budgets=[Budget.average_bits(4)], cache=True,
            cache_max_bytes="-3GB", plugins=BUILTINS,
        )  # fmt: skip
    assert not measurements_dir().exists()


def test_closing_records_the_last_use(task, home):
    store = MeasurementCache(_dir(task.model), model_key=model_digest(task.model), layers=[])
    _set_last_use(task.model, 1000.0)  # opened long ago
    store.close()
    assert cached_models(measurements_dir())[0].last_used > 1000.0
