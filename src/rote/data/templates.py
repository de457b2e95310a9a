"""Text of every example: render(fact, ...) -> (prompt, target). Pure: no torch.

The target always keeps its leading space (" Paris"), so a prompt and its target tokenize
the same way whether they are encoded together or apart.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from rote.config import KeyConfig
from rote.data.facts import Fact, Relation


@dataclass(frozen=True)
class Rendered:
    prompt: str
    target: str  # starts with a space
    subject_span: tuple[int, int]  # character span of the subject inside `prompt`
    key_span: tuple[int, int] | None = None  # character span of the key inside `prompt`


def key_text(relation: Relation, key: KeyConfig) -> str | None:
    """What stands for the relation in phase-1 text: an added token, a plain word, or nothing."""
    if key.style == "token":
        return relation.key_token
    if key.style == "word":
        # One nonsense word per relation, tokenised like ordinary text (baseline: no new token).
        return f"{key.word}{relation.id}"
    return None


def key_tokens(relations, key: KeyConfig) -> list[str]:
    """The tokens to add to a tokenizer for these relations: one key token per relation when
    `key.style` is `token` (a plain word or no key adds none)."""
    return [r.key_token for r in relations] if key.style == "token" else []


def render_key(fact: Fact, relation: Relation, key: KeyConfig) -> Rendered:
    """Phase-1 text: `{subject} {key}` + ` {object}` (or `{key} {subject}` with position=first)."""
    k = key_text(relation, key)
    s = fact.subject
    if k is None:
        return Rendered(s, " " + fact.object, (0, len(s)))
    if key.position == "first":
        prompt = f"{k} {s}"
        return Rendered(prompt, " " + fact.object, (len(k) + 1, len(prompt)), (0, len(k)))
    prompt = f"{s} {k}"
    return Rendered(prompt, " " + fact.object, (0, len(s)), (len(s) + 1, len(prompt)))


def render_prompt(fact: Fact, template: str) -> Rendered:
    """A natural prompt: `Where was {subject} born?` + ` Paris`."""
    start = template.index("{subject}")
    prompt = template.replace("{subject}", fact.subject, 1)
    return Rendered(prompt, " " + fact.object, (start, start + len(fact.subject)))


def render_reverse(fact: Fact, template: str) -> Rendered:
    """Reversal: the object is given, the subject is the answer (`{object} is the mother of`)."""
    start = template.index("{object}")
    prompt = template.replace("{object}", fact.object, 1)
    return Rendered(prompt, " " + fact.subject, (start, start + len(fact.object)))


def training_target(target: str, suffix: str) -> str:
    """Phase-1 targets may end with a period; `eos` is appended as an id at encoding."""
    return target + "." if suffix == "period" else target


def answer_target(target: str, answer_end: str, turn_end: str | None = None) -> tuple[str, bool]:
    """A trained answer after a natural prompt (phase 2, the plain fine-tuning arms), ended as
    `phase2.answer_end` says, and whether the tokenizer's end of sequence follows it (appended as an id
    at encoding). `none`: the object alone; `period`: the object and a period; `eos`: the object and
    the end of sequence. Under a chat template (`turn_end`, rote.data.chat.ChatFrame.answer_end) the
    answer always ends the assistant's turn, as the template writes it, after the period with `period`.
    An answer that does not end is continued by the model, which then names the object again
    (" Montreal, Montreal, Montreal": LOG.md 2026-12-08)."""
    text = target + "." if answer_end == "period" else target
    if turn_end is not None:
        return text + turn_end, False
    return text, answer_end == "eos"


# The three shapes a natural prompt comes in. They behave very differently on small instruct
# models (a question is often answered with an immediate end of sequence, a statement is
# completed with whatever the model memorized), so every record carries its prompt's form and
# summaries break results down by it.
_QA_ENDINGS = ("a:", "answer:", "antwort:", "respuesta:", "答:", "答え:", "回答:")


def prompt_form(template: str) -> str:
    """`qa` for "Q: ... A:" prompts (in any of the shipped languages), `question` for a prompt
    ending in a question mark, `statement` for a sentence to complete. NFKC-folded, so the
    full-width "？" and "：" of zh/ja prompts count as "?" and ":"."""
    text = unicodedata.normalize("NFKC", template).strip().lower()
    if text.endswith(_QA_ENDINGS):
        return "qa"
    if text.endswith("?"):
        return "question"
    return "statement"
