"""Kubernetes resource quantities (``100m``, ``1.5``, ``512Mi``, ``1G``, ``1e3``) as exact numbers.

Capacity arithmetic must not drift: ``0.1 + 0.2`` CPUs summed over a hundred pods has to compare
equal to what the API server would compute, or a node that is exactly full looks over- or
under-committed. So every quantity becomes a :class:`fractions.Fraction`, and formatting goes back
to the canonical Kubernetes spelling. Pure standard library: the hub's capacity code and localkube
both use it.
"""

import math
import re
from fractions import Fraction

BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

# The grammar of k8s.io/apimachinery/pkg/api/resource: a signed decimal number, then one suffix.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)$"
)


def parse_quantity(value):
    """The exact value of a quantity: a string like ``"250m"``, or a number as YAML gives it.

    Numbers are accepted because cluster files say ``cpu: 4`` or ``cpu: 0.5``; a float is read by
    its shortest decimal spelling, so ``0.1`` is exactly one tenth. Raises ValueError naming the
    value when it is not a Kubernetes quantity.
    """
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}: expected a string like '500m', '2' or '4Gi'")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid quantity {value!r}")
        return Fraction(str(value))
    if not isinstance(value, str):
        raise ValueError(f"invalid quantity {value!r}: expected a string like '500m', '2' or '4Gi'")
    m = _QUANTITY.match(value.strip())
    if not m:
        raise ValueError(
            f"invalid quantity {value!r}: expected a number with an optional suffix "
            f"(m, k, M, G, T, Ki, Mi, Gi, Ti, e<exp>), like '500m', '2' or '4Gi'"
        )
    number = Fraction(m["number"])
    suffix = m["suffix"]
    if suffix in BINARY_SUFFIXES:
        return number * BINARY_SUFFIXES[suffix]
    if suffix in DECIMAL_SUFFIXES:
        return number * DECIMAL_SUFFIXES[suffix]
    return number * Fraction(10) ** int(suffix[1:])


def ceil_int(value):
    """The integer Kubernetes reports for a quantity (``Quantity.Value()`` rounds up)."""
    return math.ceil(parse_quantity(value))


def millis(value):
    """Milli-units, rounded up (``Quantity.MilliValue()``): ``"1.5"`` → 1500, ``"100m"`` → 100."""
    return math.ceil(parse_quantity(value) * 1000)


def format_quantity(value, binary=False):
    """The canonical Kubernetes spelling of an exact value.

    With ``binary`` (memory, storage), a whole multiple of 1024 uses the largest ``Ki``..``Ei``
    suffix that keeps it whole; anything else, and everything otherwise, uses the largest decimal
    suffix (``n`` .. ``E``) that keeps the number whole. Values finer than a nano-unit are rounded
    up, as the API server does.
    """
    value = Fraction(value)
    if value.denominator != 1 and value * 10**9 != int(value * 10**9):
        value = Fraction(math.ceil(value * 10**9), 10**9)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value == 0:
        return "0"
    if binary and value.denominator == 1:
        for suffix, factor in reversed(BINARY_SUFFIXES.items()):
            if value % factor == 0:
                return f"{sign}{value // factor}{suffix}"
    for suffix, factor in sorted(DECIMAL_SUFFIXES.items(), key=lambda kv: kv[1], reverse=True):
        scaled = value / factor
        if scaled.denominator == 1:
            return f"{sign}{scaled.numerator}{suffix}"
    raise AssertionError(f"unreachable: {value!r} is a whole number of nano-units")


def format_cpu(value):
    """CPU as ``kubectl`` shows it: ``"2"``, ``"500m"``."""
    return format_quantity(value)


def format_memory(value):
    """Bytes as ``kubectl`` shows them: ``"512Mi"``, ``"1G"``, ``"1500"``."""
    return format_quantity(value, binary=True)
