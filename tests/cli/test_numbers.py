"""The one number parser of the command line: kinds, bounds and the sentences of its errors."""

from __future__ import annotations

import argparse

import pytest

from napari_unet.cli.numbers import FRACTION, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SHARE


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [(POSITIVE_INT, "3", 3), (NON_NEGATIVE_INT, "0", 0), (POSITIVE, "0.5", 0.5),
     (SHARE, "0", 0.0), (SHARE, "1", 1.0), (FRACTION, "0.25", 0.25)],
)
def test_accepted(parse, text, value):
    assert parse(text) == value and type(parse(text)) is type(value)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (POSITIVE_INT, "1.5", "expected a whole number, got '1.5'"),
        (POSITIVE_INT, "0", "expected a number >= 1, got 0"),
        (NON_NEGATIVE_INT, "-1", "expected a number >= 0, got -1"),
        (POSITIVE, "x", "expected a number, got 'x'"),
        (POSITIVE, "inf", "expected a positive number, got inf"),
        (POSITIVE, "nan", "expected a positive number, got nan"),
        (SHARE, "1.5", "expected a number from 0 to 1, got 1.5"),
        (FRACTION, "1", "expected a number between 0 and 1, got 1"),
    ],
)
def test_refused_with_a_sentence(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)
    assert str(info.value) == message
