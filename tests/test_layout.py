"""The stored-layout declaration of quantizers: counts of scales and metadata bits."""

import pytest

import mpqcore
from mpqcore.errors import ConfigError
from mpqcore.layout import Layout, layout_of
from mpqcore.quantizers import MinMaxPerTensor, MSEPerChannel, SymmetricPerChannel


def test_groups_per_granularity():
    shape = (8, 3, 3, 3)  # K = 27 per channel
    assert Layout("tensor", symmetric=False).groups(shape) == 1
    assert Layout("channel", symmetric=True).groups(shape) == 8
    assert Layout("group", symmetric=True, group_size=8).groups(shape) == 8 * 4  # ceil(27 / 8)
    # the output-channel axis of a transposed convolution is 1
    assert Layout("channel", symmetric=True).groups((3, 5, 2, 2), axis=1) == 5


def test_metadata_bits_count_zero_points_only_when_asymmetric():
    shape = (4, 10)
    assert Layout("tensor", symmetric=False).metadata_bits(shape) == 32 + 8
    assert Layout("channel", symmetric=True).metadata_bits(shape) == 4 * 32
    assert Layout("channel", symmetric=False, scale_dtype="float16").metadata_bits(shape) == 4 * (16 + 8)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"granularity": "row", "symmetric": True},
        {"granularity": "group", "symmetric": True},
        {"granularity": "channel", "symmetric": True, "group_size": 32},
        {"granularity": "group", "symmetric": True, "group_size": 0},
        {"granularity": "tensor", "symmetric": True, "scale_dtype": "float64"},
    ],
)
def test_bad_layouts_are_refused(kwargs):
    with pytest.raises((ConfigError, ValueError)):
        Layout(**kwargs)


def test_builtins_declare_their_layout():
    assert layout_of(MinMaxPerTensor()) == Layout("tensor", symmetric=False)
    assert layout_of(SymmetricPerChannel()).granularity == "channel"
    assert layout_of(MSEPerChannel()).symmetric
    assert layout_of(object()) is None
    assert mpqcore.DEFAULT_QUANTIZER in mpqcore.get_plugins().quantizers


def test_a_layout_that_is_not_a_layout_is_named():
    class Odd:
        name = "odd"
        layout = "per-channel"

    with pytest.raises(ConfigError, match=r"'odd'.*mpqcore\.Layout"):
        layout_of(Odd())
