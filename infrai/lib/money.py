"""Exact money: amounts are integers of nano-USD (1e-9 USD); never floats.

A $0.0000002 embedding is 200 nano-USD, so nothing a vendor bills rounds to zero, and a
64-bit column holds up to about $9.2 billion.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

NANO_PER_USD = 1_000_000_000
_NANO = Decimal(NANO_PER_USD)


class MoneyError(ValueError):
    pass


def usd_to_nano(amount: Decimal | str | int) -> int:
    """Convert a USD amount to nano-USD, refusing values with more than 9 decimals."""
    if isinstance(amount, float):
        raise MoneyError("money must not be a float")
    try:
        value = Decimal(amount)
    except (InvalidOperation, TypeError) as exc:
        raise MoneyError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError(f"not a finite amount: {amount!r}")
    nano = value * _NANO
    if nano != nano.to_integral_value():
        raise MoneyError(f"more precision than a nano-dollar: {amount!r}")
    return int(nano)


def nano_to_usd(nano: int) -> Decimal:
    return (Decimal(nano) / _NANO).quantize(Decimal("0.000000001"))


def format_usd(nano: int) -> str:
    """Decimal string for APIs: exact, trailing zeros trimmed to at least cents."""
    text = format(nano_to_usd(nano), "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 2:
        frac = frac.ljust(2, "0")
    return f"{whole}.{frac}"


def display_usd(nano: int) -> str:
    """Human display: dollars and cents, with sub-cent amounts shown exactly."""
    value = nano_to_usd(nano)
    if value != 0 and abs(value) < Decimal("0.01"):
        return f"${format_usd(nano)}"
    return f"${value.quantize(Decimal('0.01'), rounding=ROUND_DOWN):,}"
