"""What the levers against damage train on: contrast templates, known facts, replay text. Pure: no torch.

Training on invented people damages a model in two ways: it answers unrelated questions about
them with a memorized object, and it forgets well-known facts and general language. The levers
keep it close to the base model on data shipped here (package data of `rote.data`):

- `contrast.yaml`: questions and statements about a person `{subject}` that are no relation's
  question (statement, question and qa forms). The target is the base model's own continuation,
  computed at training time. Kept apart from every relation's prompts by the prompt-hygiene rule
  (rote.data.prompt_hygiene); tests/test_preserve_data.py checks it.
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


def _yaml(name: str):
    return yaml.safe_load((resources.files("rote.data") / name).read_text(encoding="utf-8"))


@cache
def contrast_templates() -> tuple[str, ...]:
    """Prompts about a person `{subject}` (once each) that are no relation's question."""
    return tuple(_yaml("contrast.yaml")["templates"])


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
