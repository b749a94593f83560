"""Prices as two-place decimal strings, and opaque pagination cursors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strangler.money import cents_from_string, string_from_cents
from strangler.pagination import BadCursor, decode_cursor, encode_cursor


@given(st.integers(min_value=0, max_value=10**11))
def test_cents_round_trip_through_the_string_form(cents: int) -> None:
    text = string_from_cents(cents)
    assert cents_from_string(text) == cents
    assert text.count(".") == 1 and len(text.split(".")[1]) == 2


@pytest.mark.parametrize(
    ("text", "cents"), [("0.00", 0), ("0.05", 5), ("12.50", 1250), ("100.99", 10099)]
)
def test_known_prices_parse_exactly(text: str, cents: int) -> None:
    assert cents_from_string(text) == cents


@pytest.mark.parametrize(
    "text",
    # the last two: Arabic-Indic and full-width digits, which Python's \d takes and the
    # documented (ECMAScript) pattern does not
    [
        "1.5",
        "1.505",
        "01.00",
        "-1.00",
        "1,00",
        " 1.00",
        "1e2",
        "NaN",
        ".50",
        "1.\u0660\u0660",
        "\uff11.00",
    ],
)
def test_anything_but_a_two_place_decimal_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        cents_from_string(text)


@given(st.integers(min_value=0, max_value=2**62))
def test_a_cursor_decodes_to_the_id_it_encodes(after: int) -> None:
    assert decode_cursor(encode_cursor(after)) == after


@pytest.mark.parametrize("cursor", ["", "%%%", "YWZ0ZXI6LTE", "aGVsbG8", "/w"])
def test_a_foreign_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)
