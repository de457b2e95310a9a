"""How two names compare: one normalization for the match rule (rote.evaluation.matching), the
multiple-choice option pools and the identity of a subject in user input (rote.data.userdata), so
that what counts as one answer is one name everywhere. Pure: no torch.
"""
from __future__ import annotations

import unicodedata

# What an answer may start with before the object: quotes of every language's style („Paris“,
# «Paris», »Paris«), markup, list markers and dashes, opening brackets, Spanish inverted marks.
LEADING = "\"'*:`“‘「『、。, „«»‚‹›¿¡-–—(["


def _without_latin_accents(text: str) -> str:
    """"São Paulo" -> "Sao Paulo", "Zürich" -> "Zurich": a mark is dropped only from a Latin letter,
    so the marks that make other scripts' letters (Japanese "が" is "か" + a mark) stay."""
    out: list[str] = []
    for char in unicodedata.normalize("NFD", text):
        if unicodedata.combining(char) and out and unicodedata.name(out[-1], "").startswith("LATIN"):
            continue
        out.append(char)
    return unicodedata.normalize("NFC", "".join(out))


def normalize(text: str) -> str:
    """For string matching: NFKC, case-folded ("Straße" = "STRASSE"), no accents on Latin letters
    (models write "Bogota" for "Bogotá" as often as not; no two names of the relation files differ
    only by them), collapsed whitespace, no leading quotes, markup or list punctuation (LEADING; the
    ideographic comma "、" included, which NFKC leaves as it is)."""
    text = _without_latin_accents(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.split()).lstrip(LEADING)
