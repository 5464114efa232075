"""Text normalisation applied by ``nmt prepare`` and, identically, to ``nmt translate`` input.

Unicode NFKC; no-break, narrow no-break and other Unicode spaces become plain spaces;
zero-width and other invisible format characters (category Cf: U+200B, U+FEFF, soft
hyphen, bidi marks) are removed; control characters and tabs become spaces; runs of
whitespace collapse to one space and the ends are stripped.
"""

from __future__ import annotations

import functools
import sys
import unicodedata


@functools.cache
def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat == "Cf":
            table[cp] = None
        elif cat == "Cc" or cat == "Zs" or cat in ("Zl", "Zp"):
            table[cp] = " "
    return table


def normalize(text: str, lowercase: bool = False) -> str:
    """Return the normalised form of one line of text."""
    text = unicodedata.normalize("NFKC", text).translate(_table())
    if lowercase:
        text = text.lower()
    return " ".join(text.split())
