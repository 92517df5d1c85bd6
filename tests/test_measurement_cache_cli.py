"""A real Ctrl-C (SIGINT) to ``mpq search``, then a rerun: only the missing evaluations run."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from mpqcore.plugins import ENV_DISABLE_AUTOLOAD

pytest.importorskip("mpqcore_smpq")

# SMPQ's Monte Carlo with its stopping rules off: a few hundred metric evaluations, seconds long
ARGS = [
    "search", "--task", "digits-cnn", "--method", "smpq", "--bits", "2,4,8", "--quiet", "--threads", "1",
    "--method-option", "exact=false", "--method-option", "tolerance=0", "--method-option", "truncation=0",
    "--method-option", "max_evaluations=3000", "--method-option", "use_metric=true",
]  # fmt: skip


def _run(cache, out, env):
    done = subprocess.run(
        [sys.executable, "-m", "mpqcore", *ARGS, "--cache", str(cache), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    read, stored = map(int, re.search(r"cache: .*?(\d+) values read back, (\d+) stored", done.stdout).groups())
    return read, stored, json.loads((out / "report.json").read_text())


def _entries(cache):
    try:
        with sqlite3.connect(cache / "evaluations.sqlite", timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_sigint_then_rerun_evaluates_only_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != ENV_DISABLE_AUTOLOAD}
    _, cold_stored, cold = _run(tmp_path / "cold", tmp_path / "cold-out", env)

    cache = tmp_path / "resumed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpqcore", *ARGS, "--cache", str(cache)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while _entries(cache) < 40 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    before = _entries(cache)
    assert 0 < before < cold_stored

    read, stored, resumed = _run(cache, tmp_path / "resumed-out", env)
    assert stored == cold_stored - before  # only what was missing was evaluated and stored
    assert read >= before
    assert resumed["allocation"] == cold["allocation"]
    assert resumed["objective"] == cold["objective"]
