"""The `mpq` command line: help, plugins, solve, and its error messages."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mpqcore
from mpqcore.cli import main
from mpqcore.plugins import DEFAULT_PLUGINS, ENV_DISABLE_AUTOLOAD

SMALL = Path(mpqcore.__file__).parent / "examples" / "small.json"
RAW = json.loads(SMALL.read_text())


def best_by_enumeration(raw: dict, budgets: dict | None = None) -> tuple[float, dict]:
    """The optimum of a problem file by enumerating every allocation, from the raw JSON."""
    budgets = raw.get("budgets", {}) if budgets is None else budgets
    best = (float("inf"), None)
    for combo in itertools.product(raw["bits"], repeat=len(raw["layers"])):
        alloc = dict(zip(raw["layers"], combo, strict=False))
        if any(alloc[k] != v for k, v in raw.get("pins", {}).items()):
            continue
        if any(len({alloc[n] for n in tie}) > 1 for tie in raw.get("ties", [])):
            continue
        if any(sum(raw["costs"][c][n][str(b)] for n, b in alloc.items()) > lim for c, lim in budgets.items()):
            continue
        value = sum(raw["objective"][n][str(b)] for n, b in alloc.items())
        value += sum(v for a, ba, c, bc, v in raw.get("pairs", []) if alloc[a] == ba and alloc[c] == bc)
        if value < best[0]:
            best = (value, alloc)
    return best


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("plugins", "solve", "search", "sweep", "demo"):
        assert f"    {command}" in out, command


def test_no_command_prints_help_and_exits_2(capsys):
    rc, out, _ = run(capsys)
    assert rc == 2 and "usage: mpq" in out and "solve" in out


def test_plugins_lists_the_builtins(capsys):
    rc, out, _ = run(capsys, "plugins")
    assert rc == 0
    for name in DEFAULT_PLUGINS:
        assert f"{name}  " in out
    assert "(built-in)" in out
    assert "quantizer: minmax-per-tensor, mse-per-channel, symmetric-per-channel" in out
    assert "solver: " in out and "highs" in out


def test_plugins_json(capsys):
    rc, out, _ = run(capsys, "plugins", "--json")
    assert rc == 0
    infos = json.loads(out)
    assert [i["name"] for i in infos] == list(DEFAULT_PLUGINS)  # autoload is off in core tests
    by_name = {i["name"]: i for i in infos}
    assert by_name["mpqcore.costs"]["registers"] == {"cost model": ["bops", "latency", "size"]}
    assert {"hawq", "uniform"} <= set(by_name["mpqcore.methods"]["registers"]["method"])
    for info in infos:
        assert info["distribution"] == "mpqcore" and info["entry_point"] == ""
        assert info["version"] and set(info) == {"name", "version", "distribution", "entry_point", "registers"}


def check_solution(out: dict, raw: dict, budgets: dict):
    assert {"allocation", "objective", "costs", "status", "gap"} <= set(out)
    alloc = out["allocation"]
    assert set(alloc) == set(raw["layers"])
    for name, b in raw["pins"].items():
        assert alloc[name] == b
    for tie in raw["ties"]:
        assert len({alloc[n] for n in tie}) == 1
    for cost, limit in budgets.items():
        spent = sum(raw["costs"][cost][n][str(b)] for n, b in alloc.items())
        assert spent <= limit
        assert out["costs"][cost] == pytest.approx(spent)
    value, _ = best_by_enumeration(raw, budgets)
    assert out["status"] == "optimal" and out["gap"] <= 1e-6
    assert out["objective"] == pytest.approx(value, abs=1e-9)


def test_solve_the_example(capsys):
    rc, out, err = run(capsys, "solve", str(SMALL))
    assert rc == 0, err
    result = json.loads(out)
    check_solution(result, RAW, RAW["budgets"])
    assert result["solver"] == "highs"


def test_solve_with_another_solver(capsys):
    rc, out, err = run(capsys, "solve", str(SMALL), "--solver", "brute-force", "--compact")
    assert rc == 0, err
    assert out.count("\n") == 1  # --compact: one line
    check_solution(json.loads(out), RAW, RAW["budgets"])


def test_budget_override_changes_the_answer(capsys):
    tight = 80000.0
    rc, out, err = run(capsys, "solve", str(SMALL), "--budget", f"size={tight:g}")
    assert rc == 0, err
    result = json.loads(out)
    check_solution(result, RAW, {"size": tight})
    default_value, _ = best_by_enumeration(RAW)
    assert result["objective"] > default_value + 1e-9  # a tighter budget costs quality


def test_budget_override_on_a_missing_table(capsys):
    rc, out, err = run(capsys, "solve", str(SMALL), "--budget", "bops=10")
    assert rc == 2 and out == ""
    assert "mpq solve: error: budget 'bops' names no cost table; tables: ['size']" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", "no/such/problem.json"], "problem file 'no/such/problem.json' does not exist"),
        (["solve", str(SMALL), "--solver", "higs"], "unknown solver 'higs'; did you mean 'highs'?"),
        (["solve", str(SMALL), "--budget", "size=lots"], "--budget size=lots: the limit must be a number"),
        (
            ["solve", str(SMALL), "--solver", "highs", "--solver-option", "colour=red"],
            "solver 'highs' (plugin 'mpqcore.solvers'): unknown option 'colour'; valid options: time_limit",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.startswith(f"mpq {argv[0]}: error: ")
    assert message in err
    assert "Traceback" not in err


def test_bad_json_names_the_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": [')
    rc, _, err = run(capsys, "solve", str(bad))
    assert rc == 2 and f"problem file '{bad}' is not valid JSON" in err


def test_infeasible_budget_names_the_cheapest(capsys):
    # conv1 is pinned to 8 (1152), fc1 and fc2 are tied (cheapest 65536 + 1280 at 2 bits),
    # conv2 at 2 bits is 9216: nothing costs less than 77184.
    rc, out, err = run(capsys, "solve", str(SMALL), "--budget", "size=50000")
    assert rc == 3 and out == ""
    assert "no allocation meets the budget" in err
    assert "asked <= 50000 bits (6.25 kB), cheapest achievable 77184 bits (9.65 kB)" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["solve", str(SMALL), "--budget", "size"])
    assert info.value.code == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_the_mpq_console_script(tmp_path):
    script = Path(sys.executable).parent / "mpq"
    if not script.exists():
        script = shutil.which("mpq")
    if script is None:
        pytest.skip("the mpq console script is not installed")
    env = {**os.environ, ENV_DISABLE_AUTOLOAD: "1"}
    proc = subprocess.run(
        [str(script), "solve", str(SMALL), "--compact"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    check_solution(json.loads(proc.stdout), RAW, RAW["budgets"])


def test_sweep_on_a_latency_table_from_the_command_line(capsys, tmp_path):
    # A latency budget needs the table: --cost latency --cost-option table=FILE reaches the
    # cost model in the measurement and in every point of the sweep.
    table = {"Conv2d": {"2": 1.0, "4": 2.0, "8": 4.0}, "Linear": {"2": 0.5, "4": 1.0, "8": 2.0}}
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(table))
    code, _out, err = run(
        capsys,
        "sweep",
        "--method",
        "uniform",
        "--bits",
        "2,4,8",
        "--cost",
        "latency",
        "--cost-option",
        f"table={path}",
        "--budget",
        "latency=0.5x",
        "--budget",
        "latency=1.0x",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "out" / "pareto.json").read_text())
    # digits-cnn: 3 convs and 2 linears, 8-bit latency 3*4 + 2*2 = 16
    assert [r["cost_latency"] for r in rows] == [8.0, 16.0]
    assert [r["average_bits"] for r in rows] == [4.0, 8.0]


# -- issue 13: every bad input is a usage error (exit 2), one line, no traceback ---------


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["search", "--bits", "2,,4"],
            "argument --bits: item 2 of '2,,4' is empty; write comma-separated integers 1..16",
        ),
        (["search", "--bits", "2,4,"], "argument --bits: item 3 of '2,4,' is empty"),
        (["search", "--bits", "2,4.5,8"], "argument --bits: item 2 of '2,4.5,8', '4.5', is not an integer"),
        (
            ["search", "--bits", "248"],
            "argument --bits: item 1 of '248' = 248 is outside the valid range; bit-widths are integers 1..16",
        ),
        (["sweep", "--bits", "4,2,4"], "argument --bits: '4,2,4' = [4, 2, 4] repeats [4]; give each bit-width once"),
        (["demo", "--bits", "0,4"], "argument --bits: item 1 of '0,4' = 0 is outside the valid range"),
        (["search", "--pin", "conv1=4.5"], "argument --pin: pin 'conv1=4.5': bits '4.5' is not an integer"),
        (["search", "--pin", "conv1=17"], "argument --pin: pin 'conv1=17': bits = 17 is outside the valid range"),
        (["search", "--pin", "conv1"], "argument --pin: pin 'conv1' is not LAYER=BITS"),
        (["search", "--tie", "fc1,,fc2"], "argument --tie: tie 'fc1,,fc2' has an empty layer name"),
        (["solve", str(SMALL), "--time-limit", "0"], "argument --time-limit: '0' is not a positive, finite number"),
        (["solve", str(SMALL), "--time-limit", "inf"], "argument --time-limit: 'inf' is not a positive, finite number"),
    ],
)
def test_bad_arguments_exit_2_when_the_command_line_is_read(capsys, argv, message):
    # Before: '2,,4' was read as (2, 4), '2,4.5,8' refused only as a whole, a pin to 4.5 at the end.
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", str(SMALL), "--budget", "size=-1"], "--budget size=-1: the limit must be a finite number >= 0"),
        (["solve", str(SMALL), "--budget", "size=nan"], "--budget size=nan: the limit must be a finite number >= 0"),
        (
            ["solve", str(SMALL), "--solver", "dp", "--time-limit", "3"],
            "--time-limit 3: solver 'dp' takes no time_limit option",
        ),
        (["solve", str(SMALL), "--solver", "no-such"], "unknown solver 'no-such'"),
    ],
)
def test_bad_input_found_by_mpq_exits_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("mpq solve: error: ") and message in err


def test_the_time_limit_covers_reading_the_file(capsys, monkeypatch):
    import time as clock

    import mpqcore.problem

    real = mpqcore.problem.load_problem

    def slow(path):
        clock.sleep(0.3)
        return real(path)

    monkeypatch.setattr(mpqcore.problem, "load_problem", slow)
    rc, out, err = run(capsys, "solve", str(SMALL), "--time-limit", "0.2")
    assert rc == 1 and out == ""
    assert "all of --time-limit 0.2 s, before solving began; raise --time-limit" in err


def test_traceback_is_taken_before_and_after_the_command(capsys):
    for argv in (["--traceback", "solve", str(SMALL), "--compact"], ["solve", str(SMALL), "--compact", "--traceback"]):
        rc, out, err = run(capsys, *argv)
        assert rc == 0, err
        check_solution(json.loads(out), RAW, RAW["budgets"])


def test_help_documents_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "exit status: 0 success, 1 run failed (or an internal error), 2 usage or bad input, 3 infeasible budget" in out
    )


def test_the_default_solver_fits_the_problem(capsys, tmp_path):
    # auto: the example has a pair term (highs); without it, one budget and no pairs (mckp,
    # which proves 430,000 layers in seconds where highs ran into --time-limit 30).
    rc, out, _ = run(capsys, "solve", str(SMALL), "--compact")
    assert rc == 0 and json.loads(out)["solver"] == "highs"
    separable = {**RAW, "pairs": []}
    path = tmp_path / "separable.json"
    path.write_text(json.dumps(separable))
    rc, out, err = run(capsys, "solve", str(path), "--time-limit", "30")
    assert rc == 0, err
    result = json.loads(out)
    assert result["solver"] == "mckp"
    check_solution(result, separable, separable["budgets"])


def test_search_excludes_layers_from_the_command_line(capsys, tmp_path):
    rc, _out, err = run(capsys, "search", "--task", "digits-cnn", "--method", "uniform", "--bits", "2,4,8",
                       "--exclude", "conv1", "--exclude", "fc2", "--out", str(tmp_path))  # fmt: skip
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["allocation"]) == {"conv2", "conv3", "fc1"}
    rc, _out, err = run(capsys, "search", "--task", "digits-cnn", "--method", "uniform", "--exclude", "nothing*")
    assert rc == 2 and "nothing*" in err and "Traceback" not in err


class _DropsALayer:
    """A faulty solver plugin: its answer leaves a layer out."""

    def solve(self, problem):
        bits = dict.fromkeys(problem.layers[1:], problem.bits[0])
        return mpqcore.Allocation(bits, 0.0)


def test_a_search_checks_the_solvers_answer_naming_it():
    from mpqcore.testing import digits_task

    task = digits_task()
    with pytest.raises(mpqcore.PluginError, match=r"solver '_DropsALayer'.*conv1"):
        mpqcore.search(task.model, task.calibration, method="uniform", bits=(2, 4, 8), solver=_DropsALayer(),
                       plugins=mpqcore.PluginSet(autoload=False))  # fmt: skip


def test_search_corrects_biases_from_the_command_line(capsys, tmp_path):
    rc, _out, err = run(capsys, "search", "--task", "digits-cnn", "--method", "uniform", "--bits", "2,4,8",
                       "--bias-correction", "--quantizer-option", "group_size=32", "--out", str(tmp_path))  # fmt: skip
    assert rc == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bias_correction"]["policy"] == "add"
    assert report["bias_correction"]["corrected"] == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    with pytest.raises(SystemExit) as info:
        main(["search", "--task", "digits-cnn", "--bias-correction", "sometimes"])
    assert info.value.code == 2 and "'auto', 'guard', 'off', 'always'" in capsys.readouterr().err
