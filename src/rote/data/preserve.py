"""What the levers against damage train on: contrast templates, known facts, replay text. Pure: no torch.

Training on invented people damages a model in two ways: it answers unrelated questions about
them with a memorized object, and it forgets well-known facts and general language. The levers
keep it close to the base model on data shipped here (package data of `rote.data`):

- `contrast.yaml`: questions and statements about a person `{subject}` that are no relation's
  question (statement, question and qa forms). The target is the base model's own continuation,
  computed at training time. Kept apart from every built-in relation's prompts by the
  prompt-hygiene rule (rote.data.prompt_hygiene; tests/test_preserve_data.py checks it); against a
  run's own relations (a user's included) `contrast_templates_for` leaves out at run time any
  template that overlaps one of their prompts or asks about their topic.
- `known_facts.yaml`: well-known facts ({prompt, answer}, prefix rule) for known-fact replay,
  each answered correctly by the bundled SmolLM2-135M-Instruct; disjoint from the locality probes
  (data/locality.yaml), which measure what the replay is meant to protect.
- `replay.txt`: general English prose for a KL-to-base replay term, kept apart from the
  perplexity paragraphs (data/paragraphs.txt); `replay_openings.yaml`: neutral openings from
  which the base model's own samples are drawn when the replay source is samples.

Text files follow the conventions of rote.evaluation.locality.load_paragraphs: lines starting
with '#' are comments, paragraphs are separated by blank lines, whitespace inside is collapsed.
"""
from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from rote.data.prompt_hygiene import shared_run, words

# Words any two questions about a person may share ("what is {subject}'s", "how many"): not a topic.
FUNCTION_WORDS = frozenset(
    "a an the of or and as at such to in on by for from with is are was were be been has have had "
    "does did do can what which who how many q {subject} {subject}'s".split())


def _yaml(name: str):
    return yaml.safe_load((resources.files("rote.data") / name).read_text(encoding="utf-8"))


@cache
def contrast_templates() -> tuple[str, ...]:
    """Prompts about a person `{subject}` (once each) that are no relation's question."""
    return tuple(_yaml("contrast.yaml")["templates"])


def relation_topic(relation) -> set[str]:
    """What a relation asks about, as content words: those of its label, description, object kind
    and unrelated prompts (evaluation asks those; a contrast template must leave them unseen)."""
    out: set[str] = set()
    for text in (relation.label, relation.description, relation.object_kind, *relation.unrelated_prompts):
        out |= set(words(text)) - FUNCTION_WORDS
    return out


def _relation_prompts(relation) -> list[str]:
    return [*relation.train_prompts, *relation.unrelated_prompts, *relation.reverse_prompts,
            *(p for ps in relation.test_prompts.values() for p in ps)]


def contrast_clash(template: str, relations) -> str | None:
    """Why `template` may not be a contrast anchor in a run that trains and asks `relations`: it
    overlaps one of their prompts (the prompt-hygiene rule), or it asks about one's topic; None
    when it may."""
    for rel in relations:
        for prompt in _relation_prompts(rel):
            if (run := shared_run(template, prompt)) is not None:
                return f"overlaps {rel.name}'s prompt {prompt!r} ({' '.join(run)!r})"
        if topic := sorted(set(words(template)) & relation_topic(rel)):
            return f"asks about {', '.join(topic)} ({rel.name}'s topic)"
    return None


def contrast_templates_for(relations) -> tuple[tuple[str, ...], dict[str, str]]:
    """The contrast templates a run of `relations` may train (in file order), and the ones left
    out with why. With the built-in relations none is left out (tests/test_preserve_data.py)."""
    usable, left_out = [], {}
    for template in contrast_templates():
        if (why := contrast_clash(template, relations)) is None:
            usable.append(template)
        else:
            left_out[template] = why
    return tuple(usable), left_out


@cache
def known_facts() -> tuple[dict, ...]:
    """Well-known facts as {"prompt", "answer"} dicts (a correct continuation starts with the answer)."""
    return tuple({"prompt": f["prompt"], "answer": f["answer"]} for f in _yaml("known_facts.yaml")["facts"])


def _paragraphs(name: str) -> tuple[str, ...]:
    text = (resources.files("rote.data") / name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return tuple(" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip())


@cache
def replay_paragraphs() -> tuple[str, ...]:
    """Paragraphs of general English prose for the replay term (data/replay.txt)."""
    return _paragraphs("replay.txt")


@cache
def replay_openings() -> tuple[str, ...]:
    """Neutral openings for sampling the base model's own text (data/replay_openings.yaml)."""
    return tuple(_yaml("replay_openings.yaml")["openings"])
