"""Built-in cost models: size, BOPs and the latency table (JSON or CSV)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mpqcore
from mpqcore import ConfigError, LayerInfo, ModelSpec
from mpqcore.costs import BitOperations, LatencyTable, WeightSize, cost_table

CONV = LayerInfo("features.0", "Conv2d", params=108, macs=6912)
FC = LayerInfo("fc", "Linear", params=720, macs=720)
NO_MACS = LayerInfo("head", "Linear", params=20)
SPEC = ModelSpec([CONV, FC])


def test_size_is_params_times_bits():
    size = WeightSize()
    assert size.unit == "bits"
    assert size.cost(CONV, 4) == 432.0 and size.cost(FC, 2) == 1440.0
    np.testing.assert_array_equal(cost_table(size, SPEC, (2, 4, 8)), [[216, 432, 864], [1440, 2880, 5760]])


def test_bops_is_macs_times_weight_bits_times_activation_bits():
    assert BitOperations().unit == "BOPs"
    assert BitOperations().cost(CONV, 4) == 6912 * 4 * 8
    assert BitOperations(act_bits=4).cost(FC, 2) == 720 * 2 * 4
    np.testing.assert_array_equal(cost_table(BitOperations(act_bits=2), SPEC, (1, 3)), [[13824, 41472], [1440, 4320]])


def test_bops_without_macs_says_to_introspect_with_a_batch():
    with pytest.raises(
        ConfigError,
        match="cost model 'bops': layer 'head' has no MAC count; introspect the model with an example batch",
    ):
        BitOperations().cost(NO_MACS, 4)


def test_latency_from_a_mapping_fqn_beats_kind():
    table = LatencyTable({"Linear": {"4": 1.0, "8": 2.0}, "fc": {4: 0.25}, "Conv2d": {4: 3.0}})
    assert table.cost(FC, 4) == 0.25  # fqn entry wins
    assert table.cost(FC, 8) == 2.0  # fqn row lacks 8 bits: the kind row answers
    assert table.cost(CONV, 4) == 3.0
    assert table.cost(NO_MACS, 8) == 2.0


def test_latency_from_json_file(tmp_path):
    path = tmp_path / "lat.json"
    path.write_text(
        json.dumps({"Linear": {"2": 0.5, "4": 0.7}, "features.0": {"2": 1.5, "4": 1.9}, "Conv2d": {"2": 9, "4": 9}})
    )
    model = LatencyTable(str(path))
    np.testing.assert_array_equal(cost_table(model, SPEC, (2, 4), name="latency"), [[1.5, 1.9], [0.5, 0.7]])
    assert LatencyTable(path).cost(FC, 4) == 0.7  # a Path works too


def test_latency_from_csv_file(tmp_path):
    path = tmp_path / "lat.CSV"
    path.write_text("layer,bits,latency,device\nLinear,4,0.7,x\nfc,4,0.2,x\nConv2d,4,3.5,x\nConv2d,8,6.0,x\n")
    model = LatencyTable(path)
    assert model.cost(FC, 4) == 0.2
    assert model.cost(CONV, 8) == 6.0


def test_latency_missing_entry_names_layer_kind_and_bits():
    model = LatencyTable({"Conv2d": {4: 1.0}})
    with pytest.raises(
        ConfigError, match=r"no entry for layer 'fc' \(kind Linear\) at 4 bits; add a row keyed by 'fc' or 'Linear'"
    ):
        model.cost(FC, 4)
    with pytest.raises(ConfigError, match="at 8 bits"):
        model.cost(CONV, 8)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.json", "{not json", "is neither CSV nor valid JSON"),
        ("cols.csv", "layer,bits,ms\nfc,4,1\n", r"needs CSV columns \['bits', 'latency', 'layer'\]"),
        ("empty.csv", "", "needs CSV columns"),
        ("value.csv", "layer,bits,latency\nfc,4,fast\n", "must map layer"),
        ("bits.csv", "layer,bits,latency\nfc,four,1\n", "must map layer"),
        ("list.json", "[1, 2]", "must map layer"),
        ("flat.json", '{"fc": 3}', "must map layer"),
    ],
)
def test_latency_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        LatencyTable(path)


def test_latency_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"table file .*nope.json' does not exist"):
        LatencyTable(tmp_path / "nope.json")


def test_cost_table_rejects_negative_and_non_finite_costs():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"cost model 'latency' returned .* for 'features.0' at 2 bits"):
            cost_table(LatencyTable({"Conv2d": {2: bad}, "Linear": {2: 1}}), SPEC, (2,), name="latency")


def test_cost_models_by_name():
    models = mpqcore.PluginSet(autoload=False).cost_models
    assert models.create("size").cost(FC, 3) == 2160.0
    assert models.create("bops", act_bits=4).cost(FC, 3) == 720 * 3 * 4
    assert models.create("latency", table={"fc": {3: 7.0}}).cost(FC, 3) == 7.0
    with pytest.raises(
        ConfigError, match=r"cost model 'latency' \(plugin 'mpqcore.costs'.*missing required option: table"
    ):
        models.create("latency")  # the table is required
