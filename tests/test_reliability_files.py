"""Faults in the file system and at the command line (issue 13).

- Every file mpq writes is written atomically (:mod:`mpqcore.files`): a write interrupted
  halfway, by an exception or by SIGKILL, leaves the old file as it was, and concurrent
  writers never leave a reader half a file.
- An output folder is checked before any work: an existing file, a path under a file, a
  folder that cannot be written.
- The CLI never shows a traceback: one line and a documented exit status, 130 on Ctrl-C
  (a real SIGINT in a subprocess), 1 with "a bug in ..." for an unexpected exception.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mpqcore
from mpqcore import ConfigError
from mpqcore.cli import _failure, main
from mpqcore.files import atomic_path, atomic_write_json, atomic_write_text, atomic_writer, check_output_dir
from mpqcore.plugins import ENV_DISABLE_AUTOLOAD
from mpqcore.report import Report, write_sweep
from mpqcore.types import Budget, LayerInfo, ModelSpec

SMALL = Path(mpqcore.__file__).parent / "examples" / "small.json"
ROOT = Path(__file__).resolve().parent.parent
OLD = {"version": "old", "values": list(range(100))}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name)


def half_then(exc: BaseException):
    """A json.dump that writes half of what it should and then raises ``exc``."""
    real = json.dumps

    def dump(obj, fh, **kw):
        text = real(obj, **kw)
        fh.write(text[: len(text) // 2])
        fh.flush()
        raise exc

    return dump


# -- atomic writes ---------------------------------------------------------------------


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device"), RuntimeError("x")])
def test_a_write_interrupted_halfway_leaves_the_old_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(OLD))
    monkeypatch.setattr(json, "dump", half_then(exc))
    with pytest.raises(type(exc)):
        atomic_write_json(path, {"version": "new", "values": list(range(10_000))})
    assert json.loads(path.read_text()) == OLD  # before: a truncated, unparsable file
    assert leftovers(tmp_path) == []  # the temporary file is removed too


def test_a_killed_writer_leaves_the_old_file(tmp_path):
    # SIGKILL runs no cleanup: the half-written temporary file stays, the target does not change.
    path = tmp_path / "pareto.json"
    path.write_text(json.dumps(OLD))
    script = textwrap.dedent(
        f"""
        import json, os, signal
        from mpqcore.files import atomic_write_json
        real = json.dumps
        def dump(obj, fh, **kw):
            text = real(obj, **kw)
            fh.write(text[: len(text) // 2])
            fh.flush()
            os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        json.dump = dump
        atomic_write_json({str(path)!r}, {{"version": "new", "values": list(range(10_000))}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads(path.read_text()) == OLD
    (tmp,) = leftovers(tmp_path)  # hidden, beside it, never read as the report
    assert tmp.startswith(".pareto.") and tmp.endswith(".tmp.json")


def test_concurrent_writers_never_leave_a_reader_half_a_file(tmp_path):
    path = tmp_path / "report.json"
    versions = [{"writer": w, "values": [w] * 20_000} for w in range(3)]
    atomic_write_json(path, versions[0])
    stop = threading.Event()
    errors: list[str] = []

    def write(version):
        while not stop.is_set():
            atomic_write_json(path, version)

    def read():
        for _ in range(300):
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                errors.append(repr(exc))
                continue
            if data not in versions:
                errors.append(f"unknown content {str(data)[:40]}")

    writers = [threading.Thread(target=write, args=(v,)) for v in versions]
    for t in writers:
        t.start()
    try:
        read()
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert errors == []
    assert leftovers(tmp_path) == []


def test_written_files_get_the_permissions_a_plain_write_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_atomic_writer_and_path(tmp_path):
    with atomic_writer(tmp_path / "a.csv", newline="") as fh:
        fh.write("layer,bits\r\nconv1,8\r\n")
    assert (tmp_path / "a.csv").read_bytes() == b"layer,bits\r\nconv1,8\r\n"
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # a format-from-suffix writer still works
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "plot.png").read_bytes() == b"\x89PNG"
    assert atomic_write_json(tmp_path / "n.json", {"x": None}).read_text() == '{\n "x": null\n}'
    with pytest.raises(ValueError):  # strict JSON: NaN is not written as an invalid token
        atomic_write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert leftovers(tmp_path) == []


def small_report() -> Report:
    problem = mpqcore.load_problem(SMALL)
    alloc = mpqcore.solve(problem)
    layers = [
        LayerInfo(fqn=n, kind="Linear", params=int(problem.costs["size"][i, 0] // 2))
        for i, n in enumerate(problem.layers)
    ]
    return Report(
        allocation=alloc,
        spec=ModelSpec(layers=layers),
        problem=problem,
        budgets=(Budget.absolute("size", 160000),),
        method="uniform",
        method_options={},
        solver="highs",
        quantizer="minmax-per-tensor",
        cost="size",
        results={"loss": 0.1},
        objective_info={},
        forward_passes=0,
        evaluations=0,
        timings={},
        seed=0,
        versions={},
    )


def test_report_write_keeps_the_old_report_when_a_write_fails(tmp_path, monkeypatch):
    report = small_report()
    paths = report.write(tmp_path, plots=False)
    before = {name: p.read_bytes() for name, p in paths.items()}
    monkeypatch.setattr(json, "dump", half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        report.write(tmp_path, plots=False)
    assert {name: p.read_bytes() for name, p in paths.items()} == before
    assert json.loads(paths["report"].read_text())["allocation"] == dict(report.allocation.bits)
    assert leftovers(tmp_path) == []


def test_report_write_with_its_plot(tmp_path):
    paths = small_report().write(tmp_path)
    assert paths["plot"] == tmp_path / "bits.png" and paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert leftovers(tmp_path) == []


def test_write_sweep_and_dump_problem_are_atomic(tmp_path, monkeypatch):
    # The sweep's CSV is written before its JSON fails: neither replaces the old one.
    rows = [{"method": "hawq", "average_bits": 4.0, "loss": 0.1, "allocation": {"a": 4}}]
    write_sweep(rows, tmp_path, plots=False)
    mpqcore.dump_problem(mpqcore.load_problem(SMALL), tmp_path / "problem.json")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(json, "dump", half_then(OSError(28, "No space left on device")))
    with pytest.raises(OSError):
        write_sweep(rows * 2, tmp_path, plots=False)
    with pytest.raises(OSError):
        mpqcore.dump_problem(mpqcore.load_problem(SMALL), tmp_path / "problem.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- output folders, checked before any work ---------------------------------------------


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path) == tmp_path
    nested = tmp_path / "a" / "b"
    assert check_output_dir(nested) == nested and not (tmp_path / "a").exists()  # nothing created yet
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    afile = tmp_path / "out.json"
    afile.write_text("{}")
    with pytest.raises(ConfigError, match=f"output folder '{afile}' is an existing file, not a folder"):
        check_output_dir(afile)
    with pytest.raises(ConfigError, match=f"cannot be created: '{afile}' is a file, not a folder"):
        check_output_dir(afile / "sub")
    with pytest.raises(ConfigError, match="an empty path"):
        check_output_dir("")
    with pytest.raises(ConfigError, match="cannot be used: File name too long"):
        check_output_dir(tmp_path / ("a" * 5000))  # was an OSError traceback out of argparse


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_check_output_dir_refuses_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"is not writable .*Permission denied"):
            check_output_dir(locked / "run1")
    finally:
        locked.chmod(0o700)


def test_report_write_refuses_a_file_as_its_folder(tmp_path):
    afile = tmp_path / "report"
    afile.write_text("keep me")
    with pytest.raises(ConfigError, match=r"report folder .* is an existing file"):
        small_report().write(afile)
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("command", ["search", "sweep", "demo"])
def test_mpq_out_is_checked_when_the_command_line_is_read(capsys, monkeypatch, tmp_path, command):
    # Before: found only after the whole search, and the report was lost.
    import mpqcore.plugins

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(mpqcore.plugins, "get_plugins", no_work)
    monkeypatch.setattr(mpqcore, "load_task", no_work)
    afile = tmp_path / "results.json"
    afile.write_text("{}")
    with pytest.raises(SystemExit) as info:
        main(
            [command, "--out", str(afile), "--budget", "avg-bits=4"]
            if command != "demo"
            else [command, "--out", str(afile)]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --out: --out '{afile}' is an existing file, not a folder" in err
    assert "Traceback" not in err


# -- exits of the CLI ----------------------------------------------------------------------


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
    import mpqcore.problem

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(mpqcore.problem, "load_problem", interrupted)
    rc, out, err = run(capsys, "solve", str(SMALL))
    assert rc == 130 and out == ""
    assert err == "mpq solve: interrupted; every file already written is complete\n"


def test_a_real_sigint_exits_130_without_a_traceback(tmp_path):
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import mpqcore.problem
        from mpqcore.cli import main

        def slow(path):
            Path({str(ready)!r}).write_text("x")
            time.sleep(60)

        mpqcore.problem.load_problem = slow
        sys.exit(main(["solve", {str(SMALL)!r}]))
        """
    )
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "never got ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err == "mpq solve: interrupted; every file already written is complete\n" and out == ""


def test_an_unexpected_exception_is_one_line_that_says_it_is_a_bug(capsys, monkeypatch):
    import mpqcore.problem

    def broken(path):
        return {}["missing"]

    monkeypatch.setattr(mpqcore.problem, "load_problem", broken)
    rc, out, err = run(capsys, "solve", str(SMALL))
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("mpq solve: error: internal error, a bug in mpq: KeyError: 'missing' ")
    assert "--traceback or MPQ_TRACEBACK=1" in err and "Traceback" not in err


@pytest.mark.parametrize("switch", ["flag", "env"])
def test_the_traceback_on_request(capsys, monkeypatch, switch):
    import mpqcore.problem

    def broken(path):
        return {}["missing"]

    monkeypatch.setattr(mpqcore.problem, "load_problem", broken)
    if switch == "env":
        monkeypatch.setenv("MPQ_TRACEBACK", "1")
        argv = ["solve", str(SMALL)]
    else:
        argv = ["solve", "--traceback", str(SMALL)]
    rc, _, err = run(capsys, *argv)
    assert rc == 1
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err
    assert err.rstrip().splitlines()[-1].startswith("mpq solve: error: internal error, a bug in mpq")


def test_a_bug_inside_an_installed_plugin_names_the_plugin(monkeypatch):
    import mpqcore.cli

    monkeypatch.setattr(
        mpqcore.cli, "_plugin_packages", lambda: {"mpqcore_fake": "plugin 'fake' (distribution 'mpqcore-fake')"}
    )
    namespace = {"__name__": "mpqcore_fake.method"}
    exec(compile("def measure():\n    return [][1]\n", "mpqcore_fake/method.py", "exec"), namespace)
    try:
        namespace["measure"]()
    except IndexError as exc:
        code, message = _failure(exc)
    assert code == 1
    assert message.startswith("internal error, a bug in plugin 'fake' (distribution 'mpqcore-fake'): IndexError")


def test_every_error_class_has_its_exit_status():
    from mpqcore.errors import InfeasibleError, MethodError, MpqError, PluginError, ProblemTooLargeError

    cases = {
        ConfigError("bad"): 2,
        InfeasibleError("none"): 3,
        PluginError("plugin"): 4,
        MethodError("method"): 4,
        ProblemTooLargeError("big"): 1,
        MpqError("other"): 1,
        PermissionError(13, "Permission denied", "/x"): 1,
        MemoryError(): 1,
        ValueError("bug"): 1,
    }
    for exc, code in cases.items():
        assert _failure(exc)[0] == code, exc
    assert _failure(PermissionError(13, "Permission denied", "/x"))[1] == "cannot use /x: Permission denied"
    assert _failure(ConfigError("two\nlines"))[1] == "two lines"  # always one line


def test_a_closed_pipe_ends_quietly():
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    code = "import sys; from mpqcore.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    proc.stdout.close()  # the reader is gone before mpq writes a byte
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_problem_files_beyond_the_solver_and_a_directory_exit_2(capsys, tmp_path):
    raw = json.loads(SMALL.read_text())
    raw["budgets"]["size"] = True
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    for argv, message in [
        (["solve", str(tmp_path)], "is a directory"),
        (["solve", str(bad)], r"'budgets'['size'] = True is not a number"),
    ]:
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == "" and message in err and err.count("\n") == 1


def test_huge_values_solve_from_the_command_line(capsys, tmp_path):
    raw = json.loads(SMALL.read_text())
    raw["objective"] = {n: {b: v * 1e300 for b, v in row.items()} for n, row in raw["objective"].items()}
    raw["pairs"] = [[*p[:4], p[4] * 1e300] for p in raw["pairs"]]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(raw))
    rc, out, err = run(capsys, "solve", str(path), "--solver", "highs")
    assert rc == 0, err
    result = json.loads(out)
    assert result["allocation"] == {"conv1": 8, "conv2": 4, "fc1": 4, "fc2": 4}
    assert np.isclose(result["objective"], 0.25e300)
