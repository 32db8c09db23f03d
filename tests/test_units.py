import pytest

from halp.errors import HalpError
from halp.units import bandwidth_bps, duration_s, format_bps


@pytest.mark.parametrize("text,value", [("100Mbps", 100e6), ("1Gbps", 1e9), ("2.5 kbps", 2500.0),
                                        ("40Mbit/s", 40e6), ("1e3bps", 1000.0)])
def test_bandwidth_units_parse_to_bits_per_second(text, value):
    assert bandwidth_bps(text) == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("250ms", 0.25), ("2s", 2.0), ("10us", 1e-5), ("0s", 0.0)])
def test_duration_units_parse_to_seconds(text, value):
    assert duration_s(text) == pytest.approx(value)


@pytest.mark.parametrize("bad, reason", [
    ("100", "cannot read '100'"), (100, "needs a unit"), ("-5Mbps", "must be positive"),
    ("0Mbps", "must be positive"), ("fast", "cannot read 'fast'"),
    ("100 furlongs", "unknown bandwidth unit 'furlongs'"), (True, "expected a bandwidth"),
    (None, "expected a bandwidth"),
])
def test_bad_bandwidth_is_refused(bad, reason):
    with pytest.raises(HalpError, match=reason):
        bandwidth_bps(bad)


def test_negative_duration_is_refused():
    with pytest.raises(HalpError, match="negative"):
        duration_s("-1s")


def test_a_formatted_bandwidth_parses_back_to_the_same_rate():
    for bps in (1e3, 40e6, 1e9):
        assert bandwidth_bps(format_bps(bps)) == pytest.approx(bps)
