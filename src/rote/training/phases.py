"""The two phases: their examples, and their training through the one loop (rote.training.loop).

Phase 1 memorizes every fact as `{subject} {key} {object}` text (rote.data.templates.render_key);
phase 2 trains a few of the memorized facts with natural prompts. Which phases an arm trains, and
on what, is the runner's business (rote.arms); these functions only build and train.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rote.config import KeyConfig, Phase1Config, Phase2Config
from rote.data.facts import Fact, Relation
from rote.data.templates import render_key, render_prompt, training_target
from rote.training.encode import Encoded, encode
from rote.training.loop import train


def phase1_examples(tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, mask: str) -> list[Encoded]:
    """Every fact (both splits) once, in key-token form."""
    out = []
    for fact in facts:
        r = render_key(fact, relations[fact.relation], key)
        out.append(encode(tokenizer, r.prompt, training_target(r.target, key.suffix), mask=mask,
                          subject_span=r.subject_span, append_eos=key.suffix == "eos"))
    return out


def memorize(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, cfg: Phase1Config,
             out_dir: str | Path, seed: int, save: Callable[[str], None] | None = None,
             extra: list[Encoded] = (), measure: Callable[[], float] | None = None) -> dict:
    """Train on the key-token text. With `until: memorized`, `measure()` (key-token accuracy on all
    facts: rote.evaluation.scoring.key_accuracy) is called after each epoch and training stops once
    it reaches `cfg.threshold` (cfg.epochs is then the cap). `save(name)` is called for each epoch in
    `cfg.save_epochs`. `extra` examples are trained in the same epochs (mixed training: natural
    prompts alongside the key text)."""
    if cfg.until == "memorized" and measure is None:
        raise ValueError("until: memorized needs measure(), the key-token accuracy after an epoch")
    examples = phase1_examples(tokenizer, facts, relations, key, cfg.loss_mask) + list(extra)
    history: list[dict] = []
    reached: list[int] = []

    def on_epoch_end(epoch: int) -> bool:
        if save is not None and epoch in cfg.save_epochs:
            save(f"epoch{epoch:03d}")
        if cfg.until != "memorized":
            return False
        acc = measure()
        history.append({"epoch": epoch, "key_accuracy": acc})
        if acc >= cfg.threshold and not reached:
            reached.append(epoch)
        return bool(reached)

    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, on_epoch_end, desc="phase 1")
    summary["examples"] = len(examples)
    if cfg.until == "memorized":
        summary["key_accuracy_by_epoch"] = history
        summary["memorized_at_epoch"] = reached[0] if reached else None
    return summary


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


def generalize(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], cfg: Phase2Config,
               out_dir: str | Path, seed: int, prompts_from: Relation | None = None) -> dict:
    examples = phase2_examples(tokenizer, facts, relations, cfg.n_prompts, cfg.loss_mask, cfg.facts, prompts_from)
    if not examples:
        raise ValueError("phase 2 has no examples: set data.phase2_facts >= 1")
    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, desc="phase 2")
    summary["examples"] = len(examples)
    return summary
