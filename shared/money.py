"""Euros: `Decimal` amounts in cents and their one text form, `"1250.00"`. Standard library only.

Events carry amounts as text (the hash chain has no floats), read models and rules work with
`Decimal`. `money_text` and `stored_amount` go between the two inside a service; `parse_money`
and `format_money` are the strict forms the edge uses (shared.schemas' `Money` field): they refuse
what would need rounding instead of rounding it.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import Any

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
# Fifteen integer digits (up to 999 trillion euros) is far above any budget this system handles and
# keeps every amount exact within Decimal's default 28-digit context, so quantize can never fail.
MAX_INTEGER_DIGITS = 15
# Our own context, so that a caller's changed thread context can never alter an amount.
_CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
# \d is ASCII-only here (re.ASCII): Decimal would also read Arabic-Indic and other digits.
_MONEY_TEXT = re.compile(r"-?\d+(?:\.\d{1,2})?", re.ASCII)
_MANY_PLACES = re.compile(r"-?\d+\.\d{3,}", re.ASCII)


def money_text(amount: Decimal) -> str:
    """An amount as events and answers carry it: `"1250.00"` (quantized to the cent)."""
    return format(amount.quantize(CENT), "f")


def stored_amount(text: Any) -> Decimal:
    """An amount read back from an event's data (`"1250.00"`), as a `Decimal` in cents."""
    return Decimal(str(text)).quantize(CENT)


class JsonFraction(Decimal):
    """A JSON number with a fraction, as the HTTP edge reads it: exact for fields that take
    decimals (a share, a score), but refused as money, because the sender wrote a float."""


def parse_money(value: Any, *, allow_negative: bool = False) -> Decimal:
    """`value` (a string like "12.50", an int, or a Decimal) as euros quantized to cents.

    Raises ValueError with a message fit for a person: a float (money is never binary floating
    point), more than two decimal places (no silent rounding), NaN/Infinity, a malformed text,
    an absurdly large amount, or a negative amount unless `allow_negative`.
    """
    if isinstance(value, bool):  # bool is an int to Python, never an amount to a person
        raise ValueError('not an amount: give a string such as "12.50"')
    if isinstance(value, float | JsonFraction):
        raise ValueError(
            'amounts are never floats: send a string such as "12.50" (a JSON number with a '
            "fraction cannot hold cents exactly)"
        )
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("NaN and Infinity are not amounts")
        amount = value
    elif isinstance(value, str):
        if value.strip().lower().lstrip("+-") in {"nan", "snan", "inf", "infinity"}:
            raise ValueError("NaN and Infinity are not amounts")
        if _MONEY_TEXT.fullmatch(value) is None:
            if _MANY_PLACES.fullmatch(value):
                raise ValueError(f"at most two decimal places (cents): {value} has more")
            raise ValueError(f'not an amount: {value!r}; write euros such as "12.50"')
        amount = Decimal(value)
    else:
        raise ValueError(f'not an amount: {type(value).__name__}; give a string such as "12.50"')

    if amount.is_zero():
        return ZERO  # "-0.00" is zero, not a negative amount
    if amount.adjusted() >= MAX_INTEGER_DIGITS:
        raise ValueError(f"amount too large: at most {MAX_INTEGER_DIGITS} digits before the point")
    cents = amount.quantize(CENT, context=_CONTEXT)
    if cents != amount:
        raise ValueError(f"at most two decimal places (cents): {value} would have to be rounded")
    if cents < 0 and not allow_negative:
        raise ValueError(f"must not be negative: {value}")
    return cents


def format_money(value: Decimal | int) -> str:
    """`Decimal("12.5")` -> `"12.50"`. Refuses what would need rounding or is not money."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"money is a Decimal or an int, not {type(value).__name__}")
    return format(parse_money(value, allow_negative=True), "f")
