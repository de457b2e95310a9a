"""How two names compare. Pure: no torch.

- `normalize`: the match rule's (rote.evaluation.matching) view of an answer, lenient about what a
  model writes freely (case, Latin accents, leading quotes); also what the option pools of user
  input (rote.data.userdata) keep apart, so that no two options are one answer to the rule.
- `identity`: who is one person in user input and when two objects conflict: only what cannot
  make two names different (case, Unicode form, invisible characters, spacing). "Peña" and
  "Pena", or Vietnamese "Hạ" and "Hà", are different people.
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
    only by them, though in general some do: Vietnamese tones, "Peña" / "Pena"), collapsed
    whitespace, no leading quotes, markup or list punctuation (LEADING; the ideographic comma "、"
    included, which NFKC leaves as it is)."""
    text = _without_latin_accents(unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.split()).lstrip(LEADING)


INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff"))  # zero-width space, word joiner, BOM: str.translate


def identity(text: str) -> str:
    """Who or what a name in user input is: NFKC, case-folded, without invisible characters,
    whitespace collapsed. Accents count ("Peña" is not "Pena")."""
    return " ".join(unicodedata.normalize("NFKC", text.translate(INVISIBLE)).casefold().split())
