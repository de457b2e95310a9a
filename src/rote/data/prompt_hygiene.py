r"""Prompt hygiene: an "unseen" prompt must not repeat a prompt the model was trained on. Pure: no torch.

The rule. Prompts are compared as lower-cased word sequences (regex `\w+`), where `{subject}'s`
is one token and `{subject}` and `{object}` are one token each. Two prompts *overlap* when one
contains the other's whole word sequence, or when they share a run of `MAX_SHARED_WORDS + 1` = 4
consecutive words; a shared run of `MAX_SHARED_WORDS` = 3 words is allowed.

Checked, per relation: every test prompt (every language) against every training prompt, and
every unrelated prompt against every training and every test prompt. A two-hop prompt must name the
first hop ("the mother of {subject}"), so it may share runs of words with either relation's
training prompts, but it must not contain a whole one (`two_hop_overlaps`): "The birthplace of
{subject}'s mother is" ends in the first hop's own question and measures that hop's answer.

Phase 2's validation prompts (`validation_prompts`, phase2.until: validation) are training prompts
phase 2 does not train; they must never be a prompt evaluation asks, or stopping on them would
choose the epoch on the test.

Why. A test paraphrase that contains a training prompt word for word ("These days, {subject}
lives in" vs "{subject} lives in") is not unseen: the last words before the answer drive the
prediction, so the model answers the trained prompt and the "unseen paraphrase" score is
inflated. Likewise an unrelated prompt (the negative control) that copies a relation prompt's
phrasing would measure the leak, not over-answering. Runs of 3 words are allowed because short
generic openings such as "what is {subject}'s" or "q: who is" cannot be avoided in paraphrases
of the same question.
"""
from __future__ import annotations

import re

from rote.data.synth import two_hop_prompts

MAX_SHARED_WORDS = 3  # a shared run of this many consecutive words is allowed; one more is an overlap

_TOKEN = re.compile(r"\{subject\}['\u2019]s|\{subject\}|\{object\}|\w+")


def words(prompt: str) -> tuple[str, ...]:
    """The prompt as the word sequence the rule compares ({subject}'s, {subject}, {object} one token each)."""
    return tuple(m.group(0).replace("\u2019", "'") for m in _TOKEN.finditer(prompt.lower()))


def _contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    n = len(shorter)
    return n > 0 and any(longer[i:i + n] == shorter for i in range(len(longer) - n + 1))


def _runs(seq: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {seq[i:i + n] for i in range(len(seq) - n + 1)}


def shared_run(a: str, b: str) -> tuple[str, ...] | None:
    """Why `a` and `b` overlap (the contained word sequence, or a shared run of 4 words), or None."""
    wa, wb = words(a), words(b)
    short, long_ = (wa, wb) if len(wa) <= len(wb) else (wb, wa)
    if _contains(long_, short):
        return short
    common = _runs(wa, MAX_SHARED_WORDS + 1) & _runs(wb, MAX_SHARED_WORDS + 1)
    return min(common) if common else None


def prompts_overlap(a: str, b: str) -> bool:
    return shared_run(a, b) is not None


def overlaps(relation) -> list[str]:
    """One readable line per overlapping pair of a `rote.data.facts.Relation`'s prompts; [] when clean."""
    train = [(f"train[{i}]", p) for i, p in enumerate(relation.train_prompts)]
    test = [(f"test.{lang}[{i}]", p) for lang, ps in relation.test_prompts.items() for i, p in enumerate(ps)]
    unrelated = [(f"unrelated[{i}]", p) for i, p in enumerate(relation.unrelated_prompts)]
    pairs = [(t, r) for t in test for r in train] + [(u, o) for u in unrelated for o in train + test]
    out = []
    for (name_a, a), (name_b, b) in pairs:
        run = shared_run(a, b)
        if run is not None:
            out.append(f"relation {relation.name}: {name_a} {a!r} overlaps {name_b} {b!r} "
                       f"(shared words: {' '.join(run)!r})")
    return out


def two_hop_overlaps(pair: str, templates, relations: dict) -> list[str]:
    """One line per two-hop prompt of `pair` ("first+second") that contains a whole training prompt
    of `first` or `second` (the `relations` by name); [] when clean."""
    out = []
    for name in pair.split("+"):
        for i, prompt in enumerate(templates):
            for j, trained in enumerate(relations[name].train_prompts):
                if _contains(words(prompt), words(trained)):
                    out.append(f"two-hop {pair}[{i}] {prompt!r} contains {name} train[{j}] {trained!r}")
    return out


def validation_prompts(own, n_prompts: int, count: int, prompts_from=None, repurposed=None) -> tuple[str, ...]:
    """The validation prompts of a phase-2 fact of relation `own`: training prompts of the relation
    phase 2 trains it with (`prompts_from`, else `own`) after the first `n_prompts` (phase 2 trains
    those), leaving out any prompt evaluation asks about the fact: `own`'s first `n_prompts` training
    prompts (the `train` set), a test prompt in any language or an unrelated prompt of `own` or of
    `repurposed`, a two-hop prompt. The shipped relations never need one left out; a user relation
    may (an overlap is only a warning). The first `count`; fewer when there are no more."""
    evaluated = {p for ps in two_hop_prompts().values() for p in ps} | set(own.train_prompts[:n_prompts])
    for rel in (r for r in (own, repurposed) if r is not None):
        evaluated |= set(rel.unrelated_prompts) | {p for ps in rel.test_prompts.values() for p in ps}
    # Compared as the overlap rule reads them: a test prompt that differs from a training prompt
    # only by case or punctuation is the same question.
    asked = {words(p) for p in evaluated}
    return tuple(p for p in (prompts_from or own).train_prompts[n_prompts:] if words(p) not in asked)[:count]
