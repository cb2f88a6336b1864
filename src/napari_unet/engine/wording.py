"""Counted nouns in messages: "1 image", "2 images"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, which is plural (``plural``, else ``noun + "s"``) unless ``n`` is 1.

    Examples
    --------
    >>> count(1, "label image")
    '1 label image'
    >>> count(0, "axis", "axes")
    '0 axes'
    """
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
