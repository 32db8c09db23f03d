import pytest

from halp.errors import HalpError
from halp.units import bandwidth_bps, duration_s, format_bps, format_s


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


@pytest.mark.parametrize("parse, bad, reason", [
    (bandwidth_bps, "1e400Mbps", "not a finite number"),
    (bandwidth_bps, "1e305Gbps", "not a finite number"),  # finite digits, infinite once scaled
    (duration_s, "1e400s", "not a finite number"),
    (duration_s, "1e307min", "not a finite number"),
    (bandwidth_bps, "1" * 10_000_000 + "Mbps", "too long"),
    (duration_s, "1" * 65 + "s", "too long"),
    (duration_s, " " * 70 + "1s", "too long"),
])
def test_non_finite_and_overlong_quantities_are_refused(parse, bad, reason):
    with pytest.raises(HalpError, match=reason) as info:
        parse(bad)
    assert len(str(info.value)) < 200  # the refusal never quotes a huge text


def test_a_refused_huge_value_is_quoted_briefly():
    with pytest.raises(HalpError, match="bare number") as info:
        duration_s(10**5000)
    assert len(str(info.value)) < 200
    with pytest.raises(HalpError, match="expected a bandwidth") as info:
        bandwidth_bps(["1Mbps"] * 100_000)
    assert len(str(info.value)) < 200


def test_the_longest_quantity_allowed_still_parses():
    assert duration_s("0." + "0" * 59 + "1s") == pytest.approx(1e-60)


def test_a_formatted_duration_parses_back_to_the_same_time():
    for seconds in (1e-3, 0.25, 60.0, 1e6):
        assert duration_s(format_s(seconds)) == pytest.approx(seconds)
