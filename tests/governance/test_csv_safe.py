"""Formula cells are escaped in every CSV written for a person (issue 10, finding 13)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.csv_safe import FORMULA_PREFIXES, rows_to_csv, safe_cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain text", "plain text"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (-0.5, -0.5),
        (-3, -3),
        (True, True),
    ],
)
def test_cells_that_spreadsheets_run_get_a_leading_quote(value, cell):
    assert safe_cell(value) == cell


@given(st.lists(st.lists(st.one_of(st.text(), st.integers(), st.floats(), st.none()), max_size=5)))
def test_no_text_cell_read_back_starts_like_a_formula(rows):
    text = rows_to_csv(["a", "b", "c", "d", "e"], rows)
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert len(read) == len(rows) + 1
    for written, original in zip(read[1:], rows, strict=True):
        for cell, value in zip(written, original, strict=True):
            if isinstance(value, str):
                assert not cell.startswith(FORMULA_PREFIXES)
                assert cell == (("'" + value) if value.startswith(FORMULA_PREFIXES) else value)
