"""The two phases: their examples, and their training through the one loop (rote.training.loop).

Phase 1 memorizes every fact as `{subject} {key} {object}` text (rote.data.templates.render_key);
phase 2 trains a few of the memorized facts with natural prompts. Which phases an arm trains, and
on what, is the runner's business (rote.arms); these functions only build and train.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

import torch

from rote.config import KeyConfig, Phase1Config, Phase2Config, TrainConfig
from rote.data.facts import Fact, Relation
from rote.data.chat import ChatFrame
from rote.data.templates import answer_target, prompt_form, render_key, render_prompt, training_target
from rote.training.encode import IGNORE, Encoded, encode
from rote.training.loop import epoch_order, train
from rote.training.trainable import trained_apart


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
             extra: list[Encoded] = (), measure: Callable[[], float] | None = None, **loop_kw) -> dict:
    """Train on the key-token text. With `until: memorized`, `measure()` (key-token accuracy on all
    facts: rote.evaluation.scoring.key_accuracy) is called after each epoch and training stops once
    it reaches `cfg.threshold` (cfg.epochs is then the cap). `save(name)` is called for each epoch in
    `cfg.save_epochs`. `extra` examples are trained in the same epochs (mixed training: natural
    prompts alongside the key text). `loop_kw` goes to the training loop (the levers' anchors)."""
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

    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, on_epoch_end, desc="phase 1", **loop_kw)
    summary["examples"] = len(examples)
    if cfg.until == "memorized":
        summary["key_accuracy_by_epoch"] = history
        summary["memorized_at_epoch"] = reached[0] if reached else None
    return summary


def natural_examples(tokenizer, facts: list[Fact], relations: dict[str, Relation], n_prompts: int,
                     mask: str = "object", prompts_from: Relation | None = None,
                     chat: ChatFrame | None = None, answer_end: str = "none") -> list[Encoded]:
    """Each of `facts` with the first `n_prompts` training prompts of its relation (or of
    `prompts_from`, when phase 2 teaches the key another relation's meaning: re-purposing). Phase 2
    trains the phase-2 facts' (`phase2_facts`); the plain fine-tuning arms train every fact's. The
    answer ends as `answer_end` (phase2.answer_end) says (rote.data.templates.answer_target); under a
    chat template (`chat`), the prompt is rendered in its turn and the object is the assistant's
    answer, ending its turn (rote.data.chat). The loss stays on the answer and its end (`mask`)."""
    out = []
    for fact in facts:
        rel = prompts_from or relations[fact.relation]
        if n_prompts > len(rel.train_prompts):
            raise ValueError(f"phase2.n_prompts={n_prompts} but relation {rel.name} has {len(rel.train_prompts)} training prompts")
        for template in rel.train_prompts[:n_prompts]:
            r = render_prompt(fact, template)
            if chat is not None:
                r = chat.wrap(r, prompt_form(template))
            target, eos = answer_target(r.target, answer_end, chat.answer_end if chat is not None else None)
            out.append(encode(tokenizer, r.prompt, target, mask=mask, subject_span=r.subject_span, append_eos=eos))
    return out


def phase2_facts(facts: list[Fact]) -> list[Fact]:
    """The facts phase 2 shows with natural prompts (split `phase2`)."""
    return [f for f in facts if f.split == "phase2"]


def generalize(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], cfg: Phase2Config,
               out_dir: str | Path, seed: int, prompts_from: Relation | None = None,
               measure: Callable[[], float] | None = None, chat: ChatFrame | None = None, **loop_kw) -> dict:
    """Train the phase-2 facts' natural prompts. With `until: validation`, `measure()` (accuracy on the
    validation queries: rote.evaluation.scoring.prefix_accuracy) is called after each epoch; training
    stops after `cfg.patience` epochs without improvement (cfg.epochs is then the cap) and the model
    is left with the best epoch's weights (KeepBest)."""
    if cfg.until == "validation" and measure is None:
        raise ValueError("until: validation needs measure(), the validation accuracy after an epoch")
    examples = natural_examples(tokenizer, phase2_facts(facts), relations, cfg.n_prompts, cfg.loss_mask, prompts_from,
                                chat, cfg.answer_end)
    if not examples:
        raise ValueError("phase 2 has no examples: set data.phase2_facts >= 1")
    apart = trained_apart(model, loop_kw.get("frozen_decay", ()))  # key rows trained apart from their matrix
    best = KeepBest(model, cfg.patience, apart) if cfg.until == "validation" else None
    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed,
                    (lambda epoch: best.update(epoch, measure())) if best else None, desc="phase 2", **loop_kw)
    summary["examples"] = len(examples)
    if best:
        best.restore()
        summary.update({"validation_by_epoch": best.history, "best_epoch": best.epoch})
    return summary


class KeepBest:
    """The best epoch by a measure and a CPU copy of the model's trainable weights after it. A tie
    keeps the earlier epoch: the same signal with fewer updates, so less drift from what phase 1 made.
    `apart`: trained tensors that are not the model's parameters (the key-row block of
    `key_rows_gradient: rows`, a view into a frozen matrix: rote.training.trainable); copied and
    put back with the rest, or the restored model would keep the last epoch's key rows."""

    def __init__(self, model, patience: int, apart=()):
        self.model, self.patience, self.apart = model, patience, list(apart)
        self.history: list[dict] = []
        self.epoch: int | None = None
        self.accuracy = self.state = None
        self.apart_state: list = []

    def update(self, epoch: int, accuracy: float) -> bool:
        """Record `epoch`'s accuracy; True (stop) once `patience` epochs have passed without improvement."""
        self.history.append({"epoch": epoch, "accuracy": accuracy})
        if self.epoch is None or accuracy > self.accuracy:
            self.epoch, self.accuracy = epoch, accuracy
            # Only what trains can change; frozen weights need no copy.
            self.state = {n: p.detach().to("cpu", copy=True) for n, p in self.model.named_parameters()
                          if p.requires_grad}
            self.apart_state = [p.detach().to("cpu", copy=True) for p in self.apart]
        return epoch - self.epoch >= self.patience

    @torch.no_grad()
    def restore(self) -> None:
        """Put the best epoch's weights back into the model."""
        params = dict(self.model.named_parameters())
        for name, value in self.state.items():
            params[name].copy_(value)
        for block, value in zip(self.apart, self.apart_state):
            block.copy_(value)


# ---------------------------------------------------------------- a budget of supervised tokens


def supervised_tokens(example: Encoded) -> int:
    """Supervised tokens of one encoded example, counted as the training loop counts them."""
    return sum(1 for x in example.labels[1:] if x != IGNORE)


def budgeted(examples: list[Encoded], budget: int, seed: int) -> list[Encoded]:
    """Copies of `examples`, each copy in a seeded order, cut as soon as their supervised tokens
    reach `budget`: the total overshoots by less than one example."""
    if budget <= 0 or not examples:
        raise ValueError(f"cannot build a budget of {budget} tokens from {len(examples)} examples")
    out, total, copy = [], 0, 0
    while total < budget:
        for i in epoch_order(len(examples), seed, 10_000 + copy):
            if total >= budget:
                break
            out.append(examples[i])
            total += supervised_tokens(examples[i])
        copy += 1
    return out


def train_to_budget(model, tokenizer, examples: list[Encoded], cfg: TrainConfig, budget: int, out_dir, seed: int,
                    desc: str, **loop_kw) -> dict:
    """One pass over `budgeted(examples, budget)` with `cfg`'s optimizer settings (its epochs do not
    apply); the summary says the budget and how many copies of the examples it came to."""
    chosen = budgeted(examples, budget, seed)
    summary = train(model, chosen, dataclasses.replace(cfg, epochs=1), tokenizer.pad_token_id, out_dir, seed, desc=desc,
                    **loop_kw)
    summary.update({"examples": len(chosen), "distinct_examples": len(examples),
                    "equivalent_epochs": round(len(chosen) / len(examples), 3),
                    "max_batch_tokens": cfg.batch_size * max(supervised_tokens(e) for e in examples)})
    return summary


def method_tokens(tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, key_tokens: list[str],
                  phase1: TrainConfig, phase2: Phase2Config, chat: ChatFrame | None = None) -> dict:
    """The supervised tokens the method would train with these settings: phase 1's epochs over every
    fact's key-token text, phase 2's epochs over the k facts' natural prompts (what `budget: matched`
    gives a one-phase baseline). Counted on a copy of `tokenizer` with the key tokens added."""
    from rote.training.models import add_tokens
    tok = copy.deepcopy(tokenizer)
    add_tokens(tok, key_tokens)
    key_text = phase1_examples(tok, facts, relations, dataclasses.replace(key, style="token"), phase1.loss_mask)
    natural = natural_examples(tok, phase2_facts(facts), relations, phase2.n_prompts, phase2.loss_mask, chat=chat,
                               answer_end=phase2.answer_end)
    p1 = phase1.epochs * sum(supervised_tokens(e) for e in key_text)
    p2 = phase2.epochs * sum(supervised_tokens(e) for e in natural)
    return {"tokens": p1 + p2, "phase1": p1, "phase2": p2,
            "from": f"the method's supervised tokens with these settings: phase 1, {phase1.epochs} epoch(s) x "
                    f"{len(key_text)} key-token texts = {p1}; phase 2, {phase2.epochs} epoch(s) x {len(natural)} "
                    f"natural-prompt examples = {p2}"}


def train_epochs(model, tokenizer, examples: list[Encoded], cfg: TrainConfig, out_dir, seed: int, desc: str,
                 **loop_kw) -> dict:
    """`cfg.epochs` epochs over `examples` (a one-phase arm with `budget: epochs`)."""
    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, desc=desc, **loop_kw)
    summary["examples"] = len(examples)
    return summary
