"""Phase 2: a few memorized facts with natural prompts (object-only loss), the same loop."""
from __future__ import annotations

from pathlib import Path

from rote.config import TrainConfig
from rote.encode import Encoded, encode
from rote.facts import Fact, Relation
from rote.templates import render_prompt
from rote.train import train


def phase2_examples(tokenizer, facts: list[Fact], relations: dict[str, Relation], n_prompts: int,
                    mask: str = "object", which: str = "split", prompts_from: Relation | None = None) -> list[Encoded]:
    """The phase-2 split's facts (every fact with `which="all"`: the plain fine-tuning
    baseline), each with the first `n_prompts` training prompts of its relation, or of
    `prompts_from` when phase 2 teaches the key another relation's meaning (re-purposing)."""
    out = []
    for fact in facts:
        if fact.split != "phase2" and which != "all":
            continue
        rel = prompts_from or relations[fact.relation]
        if n_prompts > len(rel.train_prompts):
            raise ValueError(f"phase2.n_prompts={n_prompts} but relation {rel.name} has {len(rel.train_prompts)} training prompts")
        for template in rel.train_prompts[:n_prompts]:
            r = render_prompt(fact, template)
            out.append(encode(tokenizer, r.prompt, r.target, mask=mask, subject_span=r.subject_span))
    return out


def generalize(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], cfg: TrainConfig,
               out_dir: str | Path, seed: int, prompts_from: Relation | None = None) -> dict:
    examples = phase2_examples(tokenizer, facts, relations, cfg.n_prompts, cfg.loss_mask, cfg.facts, prompts_from)
    if not examples:
        raise ValueError("phase 2 has no examples: set data.phase2_facts >= 1")
    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, desc="phase 2")
    summary["examples"] = len(examples)
    return summary
