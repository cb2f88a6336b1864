"""Parsing numbers on the command line: one helper, and the kinds of number the options take."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def number(kind: type, accept: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse ``type`` that reads a ``kind`` (``int`` or ``float``) and checks it.

    Parameters
    ----------
    kind : int or float
    accept : whether a value is allowed.
    wanted : what is allowed, for the error (``"a number >= 1"``).

    Examples
    --------
    >>> number(int, lambda v: v >= 1, "a number >= 1")("3")
    3
    """

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


POSITIVE_INT = number(int, lambda v: v >= 1, "a number >= 1")
NON_NEGATIVE_INT = number(int, lambda v: v >= 0, "a number >= 0")
POSITIVE = number(float, lambda v: 0 < v < math.inf, "a positive number")
FINITE = number(float, math.isfinite, "a number")
NON_NEGATIVE = number(float, lambda v: 0 <= v < math.inf, "a number >= 0")
#: what seeds numpy and torch
SEED = number(int, lambda v: 0 <= v < 2**63, "a whole number from 0 to 2**63 - 1")
#: a share from 0 to 1, both included
SHARE = number(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")
#: strictly between 0 and 1
FRACTION = number(float, lambda v: 0 < v < 1, "a number between 0 and 1")
#: from 0 (included) to 1 (excluded)
CONFIDENCE = number(float, lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1")
