"""Issue 19: the report a person reads (units, per-layer detail, sweep front, HTML), own model, fast start."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mpqcore
from mpqcore import cli
from mpqcore.progress import plain_progress
from mpqcore.report import write_sweep
from mpqcore.sweep_report import non_dominated, sweep_table
from mpqcore.units import axis_scale, human, quantity
from mpqcore.user_model import load_user_task

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "fixtures" / "user_project"
FILE = PROJECT / "my_models.py"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _project():
    sys.path.insert(0, str(PROJECT))
    try:
        import my_models  # the fixture project, as a user's own package
    finally:
        sys.path.remove(str(PROJECT))
    return my_models


@pytest.fixture(scope="module")
def report():
    torch.set_num_threads(1)
    m = _project()
    return mpqcore.search(
        m.build(), m.batches(), method="hawq", bits=(2, 4, 8), budget=mpqcore.Budget.size_bytes(800),
        metric=m.agreement, cost="bops", method_options={"samples": 2},
    )  # fmt: skip


def test_units_read_as_people_count():
    assert human(33516100, "bits") == "4.19 MB"
    assert human(9216, "bits") == "1.15 kB"
    assert human(1.234e9, "BOPs") == "1.23 G BOPs"
    assert human(0.0042, "s") == "4.20 ms"
    assert quantity(8000, "bits") == {"value": 8000.0, "unit": "bits", "human": "1.00 kB"}
    assert axis_scale([8e6, 1.6e7], "bits") == (8e6, "MB")
    assert mpqcore.Budget.size_bytes(4.19e6).describe() == "size <= 4.19 MB"  # was 'size <= 3.352e+07'


def test_report_json_keeps_raw_number_unit_and_human_string(report):
    data = report.to_json()
    assert data["cost_units"] == {"size": "bits", "bops": "BOPs"}
    size = data["costs_human"]["size"]
    assert size["value"] == data["costs"]["size"] and size["unit"] == "bits" and size["human"].endswith(" B")
    (budget,) = data["budgets"]
    assert budget["description"] == "size <= 800 B" and budget["limit"]["value"] == 6400.0
    assert "Hessian trace" in data["objective_meaning"]


def test_per_layer_rows_have_costs_sensitivity_and_share(report, tmp_path):
    rows = report.to_json()["layers"]
    objective = report.problem.objective
    layout = mpqcore.get_plugins().quantizers.create(report.quantizer).layout
    for i, row in enumerate(rows):
        layer = report.spec.layer(row["fqn"])
        stored = layout.metadata_bits(layer.weight_shape, layer.axis)  # the scales beside the codes
        assert row["costs"]["size"] == row["params"] * row["bits"] + stored
        assert row["costs"]["bops"] == row["macs"] * row["bits"] * 8
        assert [float(v) for v in row["sensitivity"].values()] == list(objective.unary[i])
    assert sum(r["predicted_share"] for r in rows) == pytest.approx(1.0)  # no pair terms in hawq
    paths = report.write(tmp_path / "out")
    with open(paths["allocation"], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "layer", "kind", "params", "macs", "bits", "size (bits)", "bops (BOPs)",
        "c@2bit", "c@4bit", "c@8bit", "predicted", "predicted_share",
    ]  # fmt: skip
    assert [int(r["bits"]) for r in table] == [r["bits"] for r in rows]
    assert float(table[0]["size (bits)"]) == rows[0]["costs"]["size"]


def test_cli_summary_shows_costs_at_human_scale(report):
    task = load_user_task(f"{FILE}:build", f"{FILE}:batches", f"{FILE}:agreement")
    text = cli._summary(report, task)
    assert "budget: size <= 800 B" in text and "bit operations" in text and "k BOPs" in text
    assert "agreement" in text and "share of predicted loss" in text


def test_non_dominated_front():
    pts = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (0.5, 0.1)]
    assert non_dominated(pts, higher_is_better=True) == [True, True, False, False, True]
    assert non_dominated([(1.0, 0.5), (2.0, 0.4)], higher_is_better=False) == [True, True]


def test_sweep_table_front_and_uniform_baseline(tmp_path):
    m = _project()
    budgets = [mpqcore.Budget.average_bits(b) for b in (2.5, 3.0, 5.0)] + [mpqcore.Budget.relative("bops", 0.5)]
    meas, points = mpqcore.sweep(
        m.build(), m.batches(), method="hawq", bits=(2, 4, 8), budgets=budgets, metric=m.agreement, cost="bops",
        method_options={"samples": 2},
    )  # fmt: skip
    table = sweep_table(meas, points, method="hawq", metric_name="agreement")
    assert [u["bits"] for u in table["uniform"]] == [2, 4, 8]
    assert [r["uniform_bits"] for r in table["rows"]] == [2, 2, 4, 4]  # highest uniform width within each budget
    assert table["quality"] == {"key": "metric", "name": "agreement", "higher_is_better": True}
    for cost in ("size", "bops"):
        plotted = table["rows"] + table["uniform"]
        front = [(p[f"cost_{cost}"], p["metric"]) for p in plotted if p[f"on_front_{cost}"]]
        for c, q in front:  # nothing plotted is as cheap and as good, one of them strictly
            assert not any(
                p[f"cost_{cost}"] <= c and p["metric"] >= q and (p[f"cost_{cost}"] < c or p["metric"] > q)
                for p in plotted
            )
        off = [p for p in plotted if not p[f"on_front_{cost}"]]
        for p in off:
            assert any(c <= p[f"cost_{cost}"] and q >= p["metric"] for c, q in front)
    paths = write_sweep(table["rows"], tmp_path, table=table)
    assert {"plot size", "plot bops", "sweep"} <= set(paths)
    saved = json.loads(paths["sweep"].read_text())
    assert saved["float"]["metric"] == 1.0 and len(saved["rows"]) == 4


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    try:  # the test setup installs it, as .ci/run does
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("chromium is not installed and apt-get cannot install it here")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed no chromium binary")
    return found


def test_html_report_renders_tables_and_images_in_a_real_browser(report, tmp_path):
    paths = report.write(tmp_path / "out")
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and 'src="http' not in page  # self-contained
    browser = _chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = paths["html"].as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    for cls in ("summary", "budgets", "check", "layers", "timings"):
        assert f'<table class="{cls}">' in dom
    assert dom.count("<tr>") >= 2 + len(report.spec.layers) and "c@4" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1400", url], capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # text and plots drawn, not a blank page
    assert image.histogram()[:128] and sum(image.histogram()[:128]) > 0.005 * image.width * image.height


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no_such_pkg.models:build", "--calibration", f"{FILE}:batches"], "no module named 'no_such_pkg'"),
        (["--model", f"{FILE}:broken_factory", "--calibration", f"{FILE}:batches"], "raised RuntimeError when called"),
        (["--model", f"{FILE}:build", "--calibration", f"{FILE}:not_batches"], "not an iterable of batches"),
        (["--model", f"{FILE}:build"], "--model needs --calibration"),
        (["--model", f"{FILE}:nothere", "--calibration", f"{FILE}:batches"], "has no 'nothere'"),
        (["--model", str(PROJECT / "missing.py") + ":build", "--calibration", f"{FILE}:batches"], "does not exist"),
        (["--calibration", f"{FILE}:batches"], "go with --model"),
    ],
)
def test_model_loader_errors_exit_2_in_one_line(capsys, argv, message):
    for command in ("search", "sweep"):
        code = cli.main([command, *argv, "--budget", "avg-bits=3", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("form", ["module", "file"])
def test_search_on_ones_own_model_from_the_command_line(capsys, monkeypatch, tmp_path, form):
    if form == "module":
        monkeypatch.syspath_prepend(str(PROJECT))
        ref = "my_models"
    else:
        ref = str(FILE)
    code = cli.main([
        "search", "--model", f"{ref}:build", "--calibration", f"{ref}:batches", "--metric", f"{ref}:agreement",
        "--method", "hawq", "--method-option", "samples=2", "--budget", "avg-bits=3", "--out", str(tmp_path), "--quiet",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "agreement" in out and "mixed precision (hawq)" in out
    assert json.loads((tmp_path / "report.json").read_text())["average_bits"] <= 3.0 + 1e-9


def test_importing_the_cli_and_listing_plugins_imports_no_torch():
    code = (
        "import sys, mpqcore.cli; from mpqcore.plugins import get_plugins; p = get_plugins(); "
        "assert 'hawq' in p.methods.names(); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_plain_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    assert list(plain_progress(range(5), desc="hawq: draws", interval=0.0, stream=stream)) == list(range(5))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("hawq: draws: 1/5 (20%)") and lines[-1].endswith("(done)")
    quiet = io.StringIO()
    list(plain_progress(range(5), desc="x", interval=60.0, stream=quiet))
    assert quiet.getvalue() == ""  # a short loop prints nothing
