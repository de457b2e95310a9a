"""When an answer counts: the match rules and the multiple-choice rank. Pure: no torch.

`hit_prefix` is the headline rule (the answer starts with the gold, at a word boundary);
`hit_contains` is the official code's looser rule; both are recorded for every answer.
"""
from __future__ import annotations

import math
import unicodedata

# What an answer may start with before the object: quotes of every language's style („Paris“,
# «Paris», »Paris«), markup, list markers and dashes, opening brackets, Spanish inverted marks.
LEADING = "\"'*:`“‘「『、。, „«»‚‹›¿¡-–—(["


def normalize(text: str) -> str:
    """Lower-case, NFKC, collapsed whitespace, no leading quotes, markup or list punctuation
    (LEADING; the ideographic comma "、" included, which NFKC leaves as it is): for string matching."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(text.split()).lstrip(LEADING)


def _unspaced_script(char: str) -> bool:
    """Chinese and Japanese write words without spaces, so a character of these scripts right
    after the gold ("Paris是法国城市", "Parisの出身") starts a new word. `str.isalnum` calls
    them alphanumeric, which would wrongly make the boundary check fail."""
    name = unicodedata.name(char, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "HALFWIDTH KATAKANA"))


def hit_prefix(generation: str, gold: str) -> bool:
    """Headline rule: the answer starts with the gold object, ending at a word boundary
    (so 'Parisian' does not count for 'Paris'; 'Paris是' does)."""
    g, o = normalize(generation), normalize(gold)
    if not g.startswith(o) or not o:
        return False
    return len(g) == len(o) or not g[len(o)].isalnum() or _unspaced_script(g[len(o)])


def hit_contains(generation: str, gold: str) -> bool:
    """The official code's rule: the gold object appears anywhere in the generation."""
    return normalize(gold) in normalize(generation)


def rank_with_ties_against_gold(scores: list[float], gold: int) -> int:
    """1-based rank of option `gold`; an option that ties with the gold ranks above it. A NaN score
    (a model that overflowed) is no score: a NaN gold ranks last, a NaN option above the gold, so
    that NaN never wins (every comparison with NaN is false, which made a NaN gold rank first)."""
    if math.isnan(scores[gold]):
        return len(scores)
    return 1 + sum(1 for k, s in enumerate(scores) if k != gold and (math.isnan(s) or s >= scores[gold]))
