"""Euros inside a service (shared/money.py): the text events carry and the amount read back.
The strict edge forms, `parse_money` and `format_money`, are tested with the schemas."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.money import CENT, ZERO, money_text, stored_amount


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1250"), "1250.00"),
        (Decimal("1250.5"), "1250.50"),
        (Decimal("0"), "0.00"),
        (Decimal("-3.2"), "-3.20"),
        (Decimal("0.125"), "0.12"),  # computed amounts round half to even, as before
        (Decimal("1E+3"), "1000.00"),  # never exponent notation
    ],
)
def test_money_text_is_euros_with_two_decimals(amount, text):
    assert money_text(amount) == text


@pytest.mark.parametrize("stored", ["1250.00", "1250", 1250, "0.10"])
def test_a_stored_amount_reads_back_in_cents(stored):
    amount = stored_amount(stored)
    assert amount == Decimal(str(stored))
    assert amount.as_tuple().exponent == -2
    assert money_text(amount) == f"{Decimal(str(stored)):.2f}"


def test_zero_and_cent_are_in_cents():
    assert (str(ZERO), str(CENT)) == ("0.00", "0.01")
