"""Resource quantities (k8s.io/apimachinery/pkg/api/resource).

`parse_quantity("100m") -> Decimal("0.1")`, "1Gi" -> 1073741824, "1e3" -> 1000,
"1.5k" -> 1500. `format_quantity(value, suffix_kind)` writes the canonical form the API
server would (binary suffixes for byte-like values that are multiples of 1024, decimal
otherwise, milli for fractions). Invalid text raises `ValueError` with upstream's message
"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
REGEX_MESSAGE = ("quantities must match the regular expression "
                 "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")

BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
           "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
           "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}


def parse_quantity(text: str | int | float) -> Decimal:
    if isinstance(text, int | float):
        return Decimal(str(text))
    s = text.strip()
    m = _RE.match(s)
    if not m:
        raise ValueError(REGEX_MESSAGE)
    number, suffix = m.group(1), m.group(2)
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(REGEX_MESSAGE) from None
    if suffix in BINARY:
        return value * BINARY[suffix]
    if suffix in DECIMAL:
        return value * DECIMAL[suffix]
    if suffix[:1] in ("e", "E"):
        try:
            return value * (Decimal(10) ** int(suffix[1:]))
        except ValueError:
            raise ValueError(REGEX_MESSAGE) from None
    raise ValueError("unable to parse quantity's suffix")


def milli_value(text: str | int | float) -> int:
    """Value in thousandths, rounded up (as resource.Quantity.MilliValue)."""
    return int((parse_quantity(text) * 1000).to_integral_value(rounding=ROUND_CEILING))


def int_value(text: str | int | float) -> int:
    """Value rounded up to an integer (as resource.Quantity.Value)."""
    return int(parse_quantity(text).to_integral_value(rounding=ROUND_CEILING))


def format_quantity(value: Decimal | int, *, binary: bool = False) -> str:
    """Canonical text. binary=True prefers Ki/Mi/Gi... for multiples of 1024."""
    v = Decimal(value)
    if v == 0:
        return "0"
    if v != v.to_integral_value():
        milli = (v * 1000).to_integral_value(rounding=ROUND_CEILING)
        return f"{int(milli)}m"
    n = int(v)
    if binary:
        for suffix, mult in reversed(BINARY.items()):
            if n % mult == 0:
                return f"{n // mult}{suffix}"
        return str(n)
    for suffix in ("E", "P", "T", "G", "M", "k"):
        mult = int(DECIMAL[suffix])
        if n % mult == 0:
            return f"{n // mult}{suffix}"
    return str(n)


def cpu_shares(request_milli: int) -> int:
    """cgroup cpu.shares from a cpu request in millicores (upstream MilliCPUToShares)."""
    if request_milli == 0:
        return 2
    return max(2, min(262144, request_milli * 1024 // 1000))


def cpu_quota(limit_milli: int, period: int = 100000) -> int:
    """CFS quota for a cpu limit in millicores (upstream MilliCPUToQuota)."""
    if limit_milli == 0:
        return 0
    return max(1000, math.ceil(limit_milli * period / 1000))
