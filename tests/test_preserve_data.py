"""The data the levers against damage train on (rote.data.preserve): contrast templates, known facts,
replay text and openings. Torch-free.

What must hold: a contrast template is no relation's question (prompt-hygiene rule against every
shipped prompt, and no word of a relation's topic or of an unrelated prompt's topic); the known
facts share neither a prompt nor an entity with the locality probes that measure them; the replay
text shares no 6-word run with the perplexity paragraphs or the probes. Each helper below is also
shown to flag a planted bad entry, so that a check that cannot fail does not pass unnoticed.
"""
from __future__ import annotations

import re
from collections import Counter

import pytest

from rote.data.facts import builtin_relation_names, load_relation
from rote.data.preserve import (FUNCTION_WORDS, contrast_templates, known_facts, relation_topic, replay_openings,
                                replay_paragraphs)
from rote.data.prompt_hygiene import shared_run, words
from rote.data.synth import two_hop_prompts
from rote.data.templates import prompt_form
from rote.evaluation.locality import load_paragraphs, load_probes

# Frame words a known fact may share with a locality probe without sharing its subject: the
# relation words of the statement ("is located in", "was written by"), numbers, and a category
# ("a mountain range" is not "the tallest mountain").
FRAME_WORDS = FUNCTION_WORDS | frozenset(
    "located largest written famous four its mountain".split())
REPLAY_RUN = 6  # consecutive words the replay text may not share with the perplexity paragraphs or the probes


def _relation_prompts() -> list[tuple[str, str]]:
    """(where, prompt) for every prompt of every shipped relation, every set, and the two-hop prompts."""
    out = []
    for name in builtin_relation_names():
        r = load_relation(name)
        sets = {"train": r.train_prompts, "unrelated": r.unrelated_prompts, "reverse": r.reverse_prompts,
                **{f"test.{lang}": ps for lang, ps in r.test_prompts.items()}}
        out += [(f"{name}.{s}[{i}]", p) for s, ps in sets.items() for i, p in enumerate(ps)]
    out += [(f"two_hop.{pair}[{i}]", p) for pair, ps in two_hop_prompts().items() for i, p in enumerate(ps)]
    return out


def _topic_words() -> set[str]:
    """What the relations ask about: the content words of their labels, descriptions and object kinds,
    and of their unrelated prompts (which evaluation asks; a contrast template must leave them unseen)."""
    return set().union(*(relation_topic(load_relation(name)) for name in builtin_relation_names()))


def _leaks(template: str, prompts: list[tuple[str, str]]) -> list[str]:
    return [f"{template!r} overlaps {where} {p!r} ({' '.join(run)!r})"
            for where, p in prompts if (run := shared_run(template, p)) is not None]


def _entities(fact: dict) -> set[str]:
    """The words of a fact (prompt and answer) that name what it is about."""
    return {w.lower() for w in re.findall(r"\w+", f"{fact['prompt']} {fact['answer']}")} - FRAME_WORDS


def _probe_clashes(fact: dict, probes=None) -> list[str]:
    """Why `fact` is not disjoint from the locality probes: the same prompt (or one containing
    another, or 4 shared words: the prompt-hygiene rule), or a shared entity word."""
    out = []
    for probe in probes or load_probes():
        if (run := shared_run(fact["prompt"], probe["prompt"])) is not None:
            out.append(f"{fact['prompt']!r} overlaps probe {probe['prompt']!r} ({' '.join(run)!r})")
        if shared := _entities(fact) & _entities(probe):
            out.append(f"{fact['prompt']!r} shares {sorted(shared)} with probe {probe['prompt']!r}")
    return out


def _runs(text: str, n: int = REPLAY_RUN) -> set[tuple[str, ...]]:
    seq = re.findall(r"\w+", text.lower())
    return {tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)}


def _held_out_runs() -> set[tuple[str, ...]]:
    texts = list(load_paragraphs()) + [f"{p['prompt']} {p['answer']}" for p in load_probes()]
    return set().union(*(_runs(t) for t in texts))


# ---------------------------------------------------------------- loaders


@pytest.mark.parametrize("loader, kind", [(contrast_templates, str), (known_facts, dict),
                                          (replay_paragraphs, str), (replay_openings, str)],
                         ids=lambda x: getattr(x, "__name__", ""))
def test_loaders_return_non_empty_tuples(loader, kind):
    items = loader()
    assert isinstance(items, tuple) and items and all(isinstance(x, kind) and x for x in items)
    assert len(set(map(repr, items))) == len(items), "a repeated entry"


def test_sizes():
    assert len(contrast_templates()) >= 36
    assert len(known_facts()) >= 40
    assert len(replay_paragraphs()) >= 25 and len(replay_openings()) >= 25


# ---------------------------------------------------------------- contrast templates


def test_contrast_templates_have_subject_once_and_no_other_placeholder():
    bad = [t for t in contrast_templates() if t.count("{subject}") != 1 or re.sub(r"\{subject\}", "", t).count("{")]
    assert not bad, bad


def test_contrast_templates_come_in_all_three_forms_roughly_balanced():
    forms = Counter(prompt_form(t) for t in contrast_templates())
    assert set(forms) == {"statement", "question", "qa"}, forms
    assert min(forms.values()) >= len(contrast_templates()) // 4, forms


def test_contrast_templates_do_not_leak_into_any_relation_prompt():
    prompts = _relation_prompts()
    assert len(prompts) > 500  # every set of every relation, every language
    relation_words = {words(p) for _, p in prompts}
    assert not [t for t in contrast_templates() if words(t) in relation_words], "a relation's own prompt"
    leaks = [line for t in contrast_templates() for line in _leaks(t, prompts)]
    assert not leaks, "\n".join(leaks)


def test_contrast_templates_ask_about_nothing_a_relation_or_its_unrelated_prompts_cover():
    topics = _topic_words()
    assert {"born", "mother", "university", "favourite", "food", "tall"} <= topics
    found = {t: sorted(set(words(t)) & topics) for t in contrast_templates() if set(words(t)) & topics}
    assert not found, found


def test_contrast_checks_flag_planted_leaks():
    prompts = _relation_prompts()
    assert _leaks("{subject}'s favourite food is", prompts)  # an unrelated prompt as it is
    assert _leaks("Yesterday, {subject} was born in", prompts)  # contains a training prompt
    assert _leaks("Q: In which city does {subject} work? A:", prompts)  # 4 shared words
    assert set(words("What is {subject}'s favourite food?")) & _topic_words()


# ---------------------------------------------------------------- known facts


def test_known_facts_are_disjoint_from_the_locality_probes():
    clashes = [line for fact in known_facts() for line in _probe_clashes(fact)]
    assert not clashes, "\n".join(clashes)


def test_known_fact_check_flags_planted_overlaps():
    assert _probe_clashes({"prompt": "The capital of France is", "answer": "Paris"})  # the same prompt
    assert _probe_clashes({"prompt": "France's capital city is", "answer": "Paris"})  # the same subject
    assert _probe_clashes({"prompt": "The Eiffel Tower is made of", "answer": "iron"})  # an entity of a probe
    assert _probe_clashes({"prompt": "Hamlet was written by", "answer": "William Shakespeare"})  # a probe's answer
    assert not _probe_clashes({"prompt": "The Hobbit was written by", "answer": "J.R.R. Tolkien"})  # frame only


def test_known_fact_answers_are_short_and_not_in_the_prompt():
    bad = [f for f in known_facts() if len(f["answer"].split()) > 3
           or re.search(rf"\b{re.escape(f['answer'].lower())}\b", f["prompt"].lower())]
    assert not bad, bad


# ---------------------------------------------------------------- replay text and openings


def test_replay_paragraphs_are_short_prose():
    lengths = [len(p.split()) for p in replay_paragraphs()]
    assert all(60 <= n <= 120 for n in lengths), lengths


def test_replay_text_shares_no_run_with_the_perplexity_paragraphs_or_the_probes():
    held_out = _held_out_runs()
    shared = {p[:40]: sorted(" ".join(r) for r in _runs(p) & held_out) for p in replay_paragraphs()
              if _runs(p) & held_out}
    assert not shared, shared


def test_replay_check_flags_a_planted_copy():
    held_out = _held_out_runs()
    copied = "Some say that " + load_paragraphs()[4][:80] + " and more."  # a stretch of a held-out paragraph
    assert _runs(copied) & held_out
    assert _runs("People say the chemical symbol for gold is Au, of course.") & held_out  # a probe and its answer


def test_replay_openings_are_neutral():
    probe_prompts = [("locality", p["prompt"]) for p in load_probes()]
    bad = [o for o in replay_openings() if "{" in o or _leaks(o, _relation_prompts() + probe_prompts)]
    assert not bad, bad
    assert _leaks("The capital of France is", probe_prompts)  # the check can fail
