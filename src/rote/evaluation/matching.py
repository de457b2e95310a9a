"""When an answer counts: the match rules and the multiple-choice rank. Pure: no torch.

`hit_prefix` is the headline rule (the answer starts with the gold, at a word boundary, and not
with a longer name the run knows: `longer_names`); `hit_contains` is the official code's looser
rule; both are recorded for every answer. Both compare `normalize`d text: case, accents on Latin
letters, width and spacing do not count.
"""
from __future__ import annotations

import bisect
import itertools
import math
import unicodedata
from collections.abc import Iterable

from rote.text import normalize


def _unspaced_script(char: str) -> bool:
    """Chinese and Japanese write words without spaces, so a character of these scripts right
    after the gold ("Paris是法国城市", "Parisの出身") starts a new word. `str.isalnum` calls
    them alphanumeric, which would wrongly make the boundary check fail."""
    name = unicodedata.name(char, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "HALFWIDTH KATAKANA"))


def _starts_with_word(g: str, o: str) -> bool:
    """Normalized `g` starts with normalized `o`, ending at a word boundary."""
    if not g.startswith(o) or not o:
        return False
    return len(g) == len(o) or not g[len(o)].isalnum() or _unspaced_script(g[len(o)])


def hit_prefix(generation: str, gold: str, longer: Iterable[str] = ()) -> bool:
    """Headline rule: the answer starts with the gold object, ending at a word boundary
    (so 'Parisian' does not count for 'Paris'; 'Paris是' does), and does not start with one of
    `longer`, the run's names that begin with the gold ('Kyoto University' names the university,
    not the city 'Kyoto'; `longer_names` finds them)."""
    g = normalize(generation)
    return _starts_with_word(g, normalize(gold)) and not any(_starts_with_word(g, normalize(n)) for n in longer)


def longer_names(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Each of `names` -> the others that start with it and go on past a word boundary
    ({"Kyoto": ("Kyoto University",), ...}; a name no other extends is left out). An answer that
    starts with the longer name names that one, so `hit_prefix` does not count it for the shorter."""
    by_text = sorted((normalize(n), n) for n in set(names))
    texts = [t for t, _ in by_text]
    out: dict[str, tuple[str, ...]] = {}
    for short_text, short in by_text:
        found = []
        # The names that start with `short_text` follow it in sorted order, one run of them.
        for text, name in itertools.takewhile(lambda pair: pair[0].startswith(short_text),
                                              by_text[bisect.bisect_right(texts, short_text):]):
            if _starts_with_word(text, short_text):
                found.append(name)
        if found:
            out[short] = tuple(found)
    return out


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


def _named_at(g: str, o: str) -> int | None:
    """The first position in normalized `g` where normalized `o` stands as a whole word, or None."""
    if not o:
        return None
    start = g.find(o)
    while start != -1:
        before_ok = start == 0 or not g[start - 1].isalnum() or _unspaced_script(g[start - 1]) or _unspaced_script(o[0])
        if before_ok and _starts_with_word(g[start:], o):
            return start
        start = g.find(o, start + 1)
    return None


def first_named(generation: str, names: Iterable[str]) -> str | None:
    """The first of `names` that the answer names, word-bounded ("Parisian" does not name Paris; "在Paris"
    does); of names found at the same place, the longest ("Kyoto University" before "Kyoto"). None
    when it names none of them (a refusal, a restated question)."""
    g = normalize(generation)
    found = [(at, -len(normalize(n)), n) for n in set(names) if (at := _named_at(g, normalize(n))) is not None]
    return min(found)[2] if found else None


def hit_first(generation: str, gold: str, known: Iterable[str]) -> bool:
    """Chat rule: the first of the run's known objects for this question (the relation's options and
    the subject's other memorized objects, `known`) that the answer names is the gold. A chat answer
    is a sentence ("Gene Finley was born in Sydney, Australia"), so it counts wherever the object
    stands, but only when no other known object comes first."""
    first = first_named(generation, [gold, *known])
    return first is not None and normalize(first) == normalize(gold)


def named_at(generation: str, name: str) -> int | None:
    """Where `name` first stands as a whole word in the normalized answer (`normalize(generation)`), or None."""
    return _named_at(normalize(generation), normalize(name))


def times_named(generation: str, name: str) -> int:
    """How many times the answer names `name`, word-bounded, without overlaps ("Go Go Go" names "Go"
    three times; "Parisian" names "Paris" none): the fluency measures' repetition of an object."""
    g, o = normalize(generation), normalize(name)
    count, start = 0, 0
    # A mention ends at a word boundary, so the rest of the answer after it starts a word.
    while (at := _named_at(g[start:], o)) is not None:
        count, start = count + 1, start + at + len(o)
    return count


def names(generation: str, name: str) -> bool:
    """The answer names `name` anywhere, word-bounded (chat answers: the controls' any-object rule)."""
    return _named_at(normalize(generation), normalize(name)) is not None


def answers(generation: str, gold: str, sentence: bool) -> bool:
    """A probe's answer counts: a continuation starts with the gold (`hit_prefix`), a sentence (an
    answer to a chat user turn) names it anywhere (`names`)."""
    return names(generation, gold) if sentence else hit_prefix(generation, gold)
