"""The questions an evaluation asks: every prompt of every prompt set about every fact. Pure: no torch.

`build_queries` is the one place that decides what is asked; evaluation (`rote.evaluation.scoring`) scores
these queries, and a study's dry run (`rote study --dry-run`) counts them to estimate its cost.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from rote.config import EvalConfig, KeyConfig
from rote.data.chat import ChatFrame
from rote.data.facts import Fact, Relation
from rote.data.prompt_hygiene import validation_prompts
from rote.data.synth import two_hop_prompts
from rote.data.templates import Rendered, prompt_form, render_key, render_prompt, render_reverse
from rote.names import PROMPT_SETS

@dataclass(frozen=True)
class Query:
    fact: Fact
    # one of PROMPT_SETS ("languages": the test prompts in another language); "validation" for
    # phase 2's stopping signal (validation_queries), which no evaluation asks or records
    prompt_set: str
    language: str
    prompt_index: int
    rendered: Rendered
    gold: str  # what a correct answer starts with (the object; the subject for reverse prompts)
    options: tuple[str, ...]
    form: str = "key"  # rote.data.templates.prompt_form of the template; "key" for the key-token prompt

    def option_text(self, option: str) -> str:
        """An option as the answer after this prompt: with the target's leading space, or none at the
        start of a chat assistant's turn (rote.data.chat)."""
        return self.rendered.target.removesuffix(self.gold) + option


def build_queries(facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, cfg: EvalConfig,
                  train_prompts: int = 1, repurposed: Relation | None = None, chat: ChatFrame | None = None) -> list[Query]:
    """Every prompt to ask about every fact, per the eval config. The `train` set is the
    relation's first `train_prompts` training prompts: those phase 2 actually trains on.
    `repurposed` asks each fact with the test prompts of `repurposed`, the relation phase 2 taught
    the key instead of its own (phase2.prompts_from, or eval.repurposed_prompts). `two_hop` asks, for a fact whose object
    has a fact of its own (data.two_hop), for that second fact's object. Under a chat template
    (`chat`), every natural prompt is rendered in its turn (rote.data.chat); the key-token prompt is
    phase-1 text and stays raw."""
    unknown = set(cfg.prompt_sets) - set(PROMPT_SETS)
    if unknown:
        raise ValueError(f"unknown prompt set(s) {sorted(unknown)} (known: {PROMPT_SETS})")
    if "repurposed" in cfg.prompt_sets and repurposed is None:
        raise ValueError("prompt set 'repurposed' needs phase2.prompts_from or eval.repurposed_prompts "
                         "(the relation whose prompts it asks)")
    n = cfg.prompts_per_set
    subjects = {f.subject for f in facts}
    second_hop = {(f.subject, f.relation): f for f in facts}
    out: list[Query] = []
    for fact in facts:
        rel = relations[fact.relation]
        def ask(prompt_set, language, templates, render=render_prompt, gold=fact.object, options=fact.options):
            for i, t in enumerate(templates[:n]):
                out.append(Query(fact, prompt_set, language, i, render(fact, t), gold, options, prompt_form(t)))
        if "key" in cfg.prompt_sets:
            out.append(Query(fact, "key", "en", 0, render_key(fact, rel, key), fact.object, fact.options))
        if "train" in cfg.prompt_sets:
            ask("train", "en", rel.train_prompts[:train_prompts])
        if "test" in cfg.prompt_sets:
            ask("test", "en", rel.test_prompts["en"])
        if "unrelated" in cfg.prompt_sets:
            ask("unrelated", "en", rel.unrelated_prompts)
        if "languages" in cfg.prompt_sets:
            for lang in cfg.languages:
                if lang in rel.test_prompts:
                    ask("languages", lang, rel.test_prompts[lang])
        if "reverse" in cfg.prompt_sets and rel.reverse_prompts:
            # The answer is the subject; the options are other subjects of the fact set, drawn per
            # fact (seeded by its id), the subject at a drawn position, as the forward options.
            rng = random.Random(f"reverse:{fact.id}")
            others = rng.sample(sorted(subjects - {fact.subject}), min(len(fact.options) - 1, len(subjects) - 1))
            others.insert(rng.randrange(len(others) + 1), fact.subject)
            ask("reverse", "en", rel.reverse_prompts, render_reverse, fact.subject, tuple(others))
        if "repurposed" in cfg.prompt_sets:
            ask("repurposed", "en", repurposed.test_prompts["en"])
        if "two_hop" in cfg.prompt_sets:
            for pair, templates in two_hop_prompts().items():
                first, second = pair.split("+")
                hop = second_hop.get((fact.object, second)) if fact.relation == first else None
                if hop is not None:
                    ask("two_hop", "en", templates, gold=hop.object, options=hop.options)
    if cfg.icl_examples:
        prefixes = demonstrations(facts, relations, cfg.icl_examples)
        out = [with_prefix(q, prefixes[q.fact.id]) if q.prompt_set != "key" else q for q in out]
    return in_chat(out, chat)


def other_objects(query: Query, companions: dict[str, dict[str, str]]) -> dict[str, str]:
    """relation -> object: the query's subject's memorized objects in its other relations (the gold is
    the fact's own); `companions` as rote.evaluation.scoring.companions_of gives them."""
    return {r: o for r, o in companions.get(query.fact.subject_id, {}).items()
            if r != query.fact.relation and o != query.gold}


def in_chat(queries: list[Query], chat: ChatFrame | None) -> list[Query]:
    """The queries as the model sees them under a chat template (the key-token prompt stays raw)."""
    if chat is None:
        return queries
    return [q if q.prompt_set == "key" else dataclasses.replace(q, rendered=chat.wrap(q.rendered, q.form))
            for q in queries]


def validation_queries(facts: list[Fact], relations: dict[str, Relation], n_prompts: int, count: int,
                       prompts_from: Relation | None = None, repurposed: Relation | None = None,
                       chat: ChatFrame | None = None) -> list[Query]:
    """Phase 2's stopping signal (phase2.until: validation): each of `facts` (the phase-2 facts) asked
    with its validation prompts, training prompts that phase 2 does not train and that no prompt set
    asks (rote.data.prompt_hygiene.validation_prompts; rote.data.factset checks there are `count`)."""
    out = []
    for fact in facts:
        templates = validation_prompts(relations[fact.relation], n_prompts, count, prompts_from, repurposed)
        out += [Query(fact, "validation", "en", i, render_prompt(fact, t), fact.object, fact.options, prompt_form(t))
                for i, t in enumerate(templates)]
    return in_chat(out, chat)


def demonstrations(facts: list[Fact], relations: dict[str, Relation], n: int) -> dict[str, str]:
    """In-context baseline, per fact id: the first `n` phase-2 facts of its relation (not the
    fact itself), each as its relation's first training prompt and answer on its own line.
    The key-token prompt gets none: it is phase-1 text, not a question."""
    by_relation: dict[str, list[Fact]] = {}
    for f in facts:
        if f.split == "phase2":
            by_relation.setdefault(f.relation, []).append(f)
    prefixes = {}
    for fact in facts:
        # One more candidate than needed: the fact itself, if it is among them, is left out.
        shown = [f for f in by_relation.get(fact.relation, [])[: n + 1] if f.id != fact.id][:n]
        prefixes[fact.id] = "".join(f"{render_prompt(f, relations[f.relation].train_prompts[0]).prompt} {f.object}\n"
                                    for f in shown)
    return prefixes


def with_prefix(query: Query, prefix: str) -> Query:
    """The query with `prefix` before its prompt, its character spans shifted to match."""
    r = query.rendered
    shift = len(prefix)
    rendered = Rendered(prefix + r.prompt, r.target, (r.subject_span[0] + shift, r.subject_span[1] + shift),
                        None if r.key_span is None else (r.key_span[0] + shift, r.key_span[1] + shift))
    return dataclasses.replace(query, rendered=rendered)
