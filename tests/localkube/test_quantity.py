"""Kubernetes quantities parse exactly and print the way the API server prints them."""

from fractions import Fraction

import pytest

from crater_hub.quantity import (
    ceil_int,
    format_cpu,
    format_memory,
    format_quantity,
    millis,
    parse_quantity,
)


@pytest.mark.parametrize(
    "text, value",
    [
        ("100m", Fraction(1, 10)),
        ("2", 2),
        ("1.5", Fraction(3, 2)),
        (".5", Fraction(1, 2)),
        ("+4", 4),
        ("-1", -1),
        ("512Mi", 512 * 2**20),
        ("2Ki", 2048),
        ("1Gi", 2**30),
        ("1.5Gi", 3 * 2**29),
        ("1G", 10**9),
        ("1k", 1000),
        ("1E", 10**18),
        ("1e3", 1000),
        ("1E3", 1000),
        ("5e-3", Fraction(5, 1000)),
        ("250u", Fraction(250, 10**6)),
        ("1n", Fraction(1, 10**9)),
        (4, 4),
        (0.1, Fraction(1, 10)),
    ],
)
def test_parse_is_exact(text, value):
    assert parse_quantity(text) == value


def test_sums_do_not_drift():
    assert sum(parse_quantity("100m") for _ in range(30)) == parse_quantity("3")
    assert parse_quantity("0.1") + parse_quantity("0.2") == parse_quantity("300m")


@pytest.mark.parametrize(
    "bad", ["", "abc", "1K", "1e", "1.2.3", "Mi", "1 Gi", "1Gb", True, None, [1]]
)
def test_invalid_quantities_are_refused_with_the_value_named(bad):
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(bad)


@pytest.mark.parametrize(
    "text, cpu, memory",
    [
        ("1.5", "1500m", "1500m"),
        ("2", "2", "2"),
        ("2000", "2k", "2k"),
        ("1500", "1500", "1500"),
        ("512Mi", "536870912", "512Mi"),
        ("1.5Gi", "1610612736", "1536Mi"),
        ("1G", "1G", "1G"),
        ("0", "0", "0"),
    ],
)
def test_canonical_formatting(text, cpu, memory):
    assert format_cpu(parse_quantity(text)) == cpu
    assert format_memory(parse_quantity(text)) == memory


def test_format_rounds_below_a_nano_unit_up_and_keeps_sign():
    assert format_quantity(Fraction(1, 3 * 10**9)) == "1n"
    assert format_quantity(-parse_quantity("250m")) == "-250m"


def test_integer_views_round_up():
    assert ceil_int("1500m") == 2
    assert ceil_int("1Ki") == 1024
    assert millis("1.5") == 1500
    assert millis("1n") == 1
