"""text/normal.py: what every check reads, and the way back to the characters as written."""

from __future__ import annotations

import pytest

from text.normal import normal

CASES = {
    "full-width": ("Take \uff13\uff10\uff10\uff10\uff4d\uff47 now", "Take 3000mg now"),
    "zero-width in a number": ("Take 30\u200b00 mg now", "Take 3000 mg now"),
    "soft hyphen in a name": ("acet\u00adaminophen", "acetaminophen"),
    "cyrillic homoglyphs": ("\u0430c\u0435t\u0430minophen", "acetaminophen"),
    "spaced digits": ("Take 3 0 0 0 mg now", "Take 3000 mg now"),
    "number words": ("fifteen grams", "15 grams"),
    "compound number words": ("two hundred and fifty mg", "250 mg"),
    "digits named one by one": ("MRN four four five five six six seven", "MRN 4455667"),
}


@pytest.mark.parametrize("written, read", CASES.values(), ids=CASES.keys())
def test_the_text_reads_as_a_reader_sees_it(written: str, read: str) -> None:
    assert normal(written).text == read


@pytest.mark.parametrize("written, read", CASES.values(), ids=CASES.keys())
def test_every_span_maps_back_to_the_characters_written(written: str, read: str) -> None:
    n = normal(written)
    start, end = n.span(0, len(n.text))
    assert (start, end) == (0, len(written))
    digits = n.text.find("3000") if "3000" in n.text else -1
    if digits >= 0:  # the number as written, zero-width, spaces and full width included
        a, b = n.span(digits, digits + 4)
        assert normal(written[a:b]).text.replace(" ", "") == "3000"


@pytest.mark.parametrize(
    "text",
    [
        "Take 500 mg every 6 hours.",  # plain ASCII: returned as it is, no map
        "on one side, every four hours, two tablets",  # the small numbers the checks read themselves
        "5.0 mg, 2 500 mg tablets, 120/80",  # decimals, a count before a dose, a ratio
    ],
)
def test_what_needs_no_change_is_left_as_written(text: str) -> None:
    n = normal(text)
    assert n.text == text and n.starts is None
