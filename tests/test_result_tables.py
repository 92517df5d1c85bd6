"""mpqcore.result_tables, and the five plugins' results scripts rendering their committed tables from their JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mpqcore.result_tables import (
    DIGITS_CNN,
    bits_table,
    int_keys,
    markdown_blocks,
    markdown_table,
    report_row,
    rerender,
    write_results,
)

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
#: Each plugin's results script, with what it imports beyond the core.
SCRIPTS = {"eagl": (), "alps": (), "mixquant": ("mpqcore_mixquant",), "clado": ("scipy",), "smpq": ()}


def test_markdown_table_and_blocks():
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, ""]]) == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]
    assert markdown_blocks(["one"], ["| a |", "|---|"]) == "one\n\n| a |\n|---|\n"


def test_bits_table_with_a_column():
    table = {"conv1": {2: 0.5, 4: 0.25}, "fc": {2: 1.0, 4: 0.0}}
    lines = bits_table(table, (2, 4), lambda row, b: f"{row[b]:.2f}", columns={"params": {"conv1": 144, "fc": 10}})
    assert lines == [
        "| layer | params | b=2 | b=4 |",
        "|---|---|---|---|",
        "| conv1 | 144 | 0.50 | 0.25 |",
        "| fc | 10 | 1.00 | 0.00 |",
    ]


def test_int_keys_undoes_what_json_did_to_bit_widths():
    data = {"entropy": {"conv1": {2: 1.5, 8: 3.0}}, "runs": {"3.0": {"allocation": {"conv1": 4}}}, "d": [{-1: 0}]}
    assert int_keys(json.loads(json.dumps(data))) == data


def test_report_row_names_an_unknown_field():
    with pytest.raises(KeyError, match="unknown report fields \\['acuracy'\\]"):
        report_row(None, "acuracy")  # type: ignore[arg-type]


def test_comparison_table_takes_uniform_from_the_first_run():
    row = {"allocation": {"conv1": 4, "fc": 2}, "average_bits": 3.0, "accuracy": 0.9, "loss": 0.1, "measure_s": 1.0}
    runs = {
        "a": {b: {**row, "uniform_accuracy": 0.5, "uniform_bits": 3} for b in ("3.0", "4.0")},
        "b": {b: dict(row) for b in ("3.0", "4.0")},
    }
    lines = DIGITS_CNN.table(runs, method_column="method + solver", label=lambda name, r: name.upper())
    assert lines[0].startswith("| method + solver | budget (avg bits) | allocation (conv1, fc) |")
    assert lines[-1] == "| B | 4.0 | 4, 2 | 3.000 | 0.9000 | 0.5000 (3) | 0.1000 | 1.00 |"


def test_write_then_rerender(tmp_path):
    data = {"table": {"l": {2: 1.0}}}

    def markdown(d):
        return markdown_blocks(bits_table(d["table"], (2,), lambda row, b: f"{row[b]:g}"))

    text = write_results(tmp_path, data, markdown)
    assert (tmp_path / "results.md").read_text() == text and (tmp_path / "results.json").read_text().endswith("\n")
    (tmp_path / "results.md").write_text("stale")
    assert rerender(tmp_path, markdown) == text == (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("plugin", sorted(SCRIPTS))
def test_each_plugins_tables_render_from_its_results_json(plugin):
    for module in SCRIPTS[plugin]:
        pytest.importorskip(module)
    path = PLUGINS / plugin / "scripts" / "results.py"
    spec = importlib.util.spec_from_file_location(f"results_{plugin}", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = (path.parent / "results.md").read_text()
    assert rerender(path.parent, script.markdown, write=False) == committed
