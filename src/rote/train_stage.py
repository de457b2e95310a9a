"""The runner's training stages (phase1, phase2): what a phase trains, looked up by name.

An arm (rote.arms) names what each of its phases trains; TRAINERS maps that name to the function
that trains it, so a new kind of training (a model editor) is a new entry, not another branch of the
runner. Every trainer gets a `Phase` (the session, which phase, its settings, its folder and the
training loop's extra arguments for the levers) and returns the phase's summary; `run_training`
wraps it: LoRA on and off, the levers, the checkpoint and the summary file. A phase the arm does not
train is `skip_phase`. `session` is the run's rote.runner.Session.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rote.arms import ARMS, eval_config
from rote.config import UpdateConfig
from rote.data.facts import Fact
from rote.data.templates import key_tokens
from rote.errors import ConfigError
from rote.evaluation.queries import validation_queries
from rote.fileio import write_summary
from rote.names import CHECKPOINT_DIR, METRICS_FILE
from rote.training import processes

if TYPE_CHECKING:
    from rote.runner import Session


@dataclass
class Phase:
    """One phase being trained: what a trainer needs besides the model."""
    session: Session
    name: str  # phase1 | phase2
    tcfg: object  # the phase's settings (cfg.phase1 or cfg.phase2)
    out: Path  # the phase's folder
    loop_kw: dict  # the training loop's extra arguments: the levers' anchors, rows frozen from decay

    @property
    def k_facts(self) -> list[Fact]:
        from rote.training.phases import phase2_facts
        return phase2_facts(self.session.facts)

    def natural(self, facts: list[Fact], mask: str) -> list:
        """`facts` with their natural training prompts, as phase 2 trains them (rote.training.phases)."""
        from rote.training.phases import natural_examples
        s, cfg = self.session, self.session.cfg
        return natural_examples(s.tokenizer, facts, s.relations, cfg.phase2.n_prompts, mask, s.prompts_from, s.chat,
                                cfg.phase2.answer_end)

    def key_accuracy(self) -> float:
        """phase1.until: memorized: the share of facts whose key-token prompt generates the object."""
        from rote.evaluation.scoring import key_accuracy
        s = self.session
        return key_accuracy(s.model, s.tokenizer, s.facts, s.relations, s.cfg.key, share=True)

    def save_epoch(self, name: str) -> None:
        from rote.training.checkpoint import save_checkpoint
        from rote.training.lora import merge_lora
        s = self.session
        # merge_and_unload changes the model in place: merge a copy, training goes on.
        model = merge_lora(copy.deepcopy(s.model)) if self.tcfg.method == "lora" else s.model
        save_checkpoint(model, s.tokenizer, s.key_record, self.out / "epochs" / name)


def _key_text(p: Phase) -> dict:
    """Phase 1 of the method and its key variants: every fact's key-token text, until memorized."""
    from rote.training.phases import memorize
    s = p.session
    summary = memorize(s.model, s.tokenizer, s.facts, s.relations, s.cfg.key, p.tcfg, p.out, s.cfg.seed,
                       p.save_epoch, [], p.key_accuracy, **p.loop_kw)
    summary["mixed_examples"] = 0
    return summary


def _natural_k(p: Phase) -> dict:
    """Phase 2: the k facts' natural prompts (phase2.until: validation stops it on held-out training
    prompts). As a one-phase arm's phase 1 (plain_finetune_k), one phase to a budget."""
    from rote.evaluation.scoring import prefix_accuracy
    from rote.training.phases import generalize
    if p.name == "phase1":
        return _one_phase(p, p.natural(p.k_facts, p.tcfg.loss_mask))
    s, cfg = p.session, p.session.cfg

    def validate() -> float:
        queries = validation_queries(p.k_facts, s.relations, cfg.phase2.n_prompts, cfg.phase2.validation_prompts,
                                     s.prompts_from, s.repurposed, s.chat)
        return prefix_accuracy(s.model, s.tokenizer, queries, eval_config(cfg), share=True, chat=s.chat)

    return generalize(s.model, s.tokenizer, s.facts, s.relations, p.tcfg, p.out, cfg.seed, s.prompts_from, validate,
                      chat=s.chat, **p.loop_kw)


def _natural_all(p: Phase) -> dict:
    """plain_finetune: every fact's natural prompts in one phase."""
    return _one_phase(p, p.natural(p.session.facts, p.tcfg.loss_mask))


def _mixed(p: Phase) -> dict:
    """mixed: the key text and the k facts' natural prompts in one phase (`budget: epochs` trains it as
    phase 1 trains the key text, with them beside it)."""
    from rote.training.phases import memorize, phase1_examples
    s, cfg = p.session, p.session.cfg
    extra = p.natural(p.k_facts, cfg.phase2.loss_mask)
    if cfg.budget == "epochs":
        summary = memorize(s.model, s.tokenizer, s.facts, s.relations, cfg.key, p.tcfg, p.out, cfg.seed, p.save_epoch,
                           extra, p.key_accuracy, **p.loop_kw)
        summary["mixed_examples"] = len(extra)
        return summary
    return _one_phase(p, phase1_examples(s.tokenizer, s.facts, s.relations, cfg.key, p.tcfg.loss_mask) + extra)


def _one_phase(p: Phase, examples: list) -> dict:
    """A one-phase arm: `examples` for phase 1's epochs (`budget: epochs`) or to the token budget."""
    from rote.training.phases import train_epochs, train_to_budget
    s, cfg = p.session, p.session.cfg
    if not examples:
        raise ConfigError(f"arm {cfg.arm} has nothing to train: data.phase2_facts is 0")
    if cfg.budget == "epochs":
        return train_epochs(s.model, s.tokenizer, examples, p.tcfg, p.out, cfg.seed, p.name, **p.loop_kw)
    budget = training_budget(s)
    summary = train_to_budget(s.model, s.tokenizer, examples, p.tcfg, budget["tokens"], p.out, cfg.seed, p.name,
                              **p.loop_kw)
    summary.update({"budget": budget["tokens"], "budget_from": budget["from"]})
    return summary


def _edit(p: Phase) -> dict:
    """A model editor (the arm's name: rome, memit, alphaedit; rote.editing): every fact's training
    prompts, as phase 2 trains them (in their chat turn under a template, the answer ended as
    phase2.answer_end says), edited into the MLP down-projections."""
    from rote.data.templates import answer_target, prompt_form, render_prompt
    from rote.editing.editors import edit
    from rote.editing.locate import Request
    s, cfg = p.session, p.session.cfg
    requests = []
    for fact in s.facts:
        for template in s.relations[fact.relation].train_prompts[:cfg.phase2.n_prompts]:
            r = render_prompt(fact, template)
            if s.chat is not None:
                r = s.chat.wrap(r, prompt_form(template))
            target, eos = answer_target(r.target, cfg.phase2.answer_end, s.chat.answer_end if s.chat else None)
            requests.append(Request(r.prompt, r.subject_span, target + (s.tokenizer.eos_token if eos else "")))
    return edit(s.model, s.tokenizer, requests, cfg.arm, cfg.edit)


# What a phase trains (rote.arms: Arm.phase1, Arm.phase2) -> the function that trains it.
TRAINERS: dict[str, Callable[[Phase], dict]] = {
    "key_text": _key_text,
    "natural_k": _natural_k,
    "natural_all": _natural_all,
    "mixed": _mixed,
    "edit": _edit,
}


def run_training(session: Session, phase: str) -> dict:
    """Train `phase` as the run's arm says (TRAINERS[what the arm's phase trains]), with LoRA when the
    phase's `method` is lora, the levers of `phaseN.preserve` and the update restricted as
    `phaseN.update` says; save the checkpoint and write the summary."""
    from rote.training import trainable
    from rote.training.lora import apply_lora, merge_lora

    cfg, arm = session.cfg, ARMS[session.cfg.arm]
    trains = arm.phase1 if phase == "phase1" else arm.phase2
    tcfg = cfg.phase1 if phase == "phase1" else cfg.phase2
    out = session.run_dir / phase
    if processes.is_main():  # the loop's main process appends to it
        (out / METRICS_FILE).unlink(missing_ok=True)  # a killed attempt's steps are not part of this one
    key_ids = list(session.key_record.get("tokens", {}).values())
    if tcfg.method == "lora":
        session.model = apply_lora(session.model, tcfg.lora, key_ids, cfg.seed * 10 + (1 if phase == "phase1" else 2))
        restricted = None
    else:
        restricted = trainable.restrict(session.model, tcfg.update, key_ids, f"{phase}.update")
    # Contrast questions ask about the phase-2 split's people only, whatever the arm trains: the
    # held-out people's unrelated prompts are the control every arm is measured on.
    from rote.training.phases import phase2_facts
    loop_kw, preserve_info = _levers(session, tcfg, phase2_facts(session.facts), restricted)
    summary = TRAINERS[trains](Phase(session, phase, tcfg, out, loop_kw))
    if tcfg.method == "lora":
        session.model = merge_lora(session.model)
    else:
        trainable.release(session.model, restricted)
    if preserve_info:
        summary["preserve"] = preserve_info
    if tcfg.update != UpdateConfig():
        summary["trainable_parameters"] = restricted["trainable"]
    session.save(out / CHECKPOINT_DIR)
    # A sharded (FSDP2) model is loaded whole from its checkpoint for what comes next, so that
    # evaluation can share out its batches (rote.training.processes.sharing).
    session.loaded_from = None if processes.sharded(session.model) else str(out / CHECKPOINT_DIR)
    processes.on_main(lambda: write_summary(out, summary))
    return summary


def _levers(session: Session, tcfg, asked_about: list[Fact], restricted: dict | None) -> tuple[dict, dict]:
    """The training loop's extra arguments for a phase's levers against damage: the anchors of
    `tcfg.preserve` (rote.levers: contrast questions about `asked_about`'s subjects, replay, known
    facts) and the parameters a row mask freezes (`tcfg.update`); and what the summary says of them."""
    from rote import levers
    frozen = restricted["frozen_decay"] if restricted else set()
    if not levers.active(tcfg.preserve):
        return {"frozen_decay": frozen}, {}
    # The contrast templates ask about a person ("How old is {subject}?"): people only.
    subjects = list(dict.fromkeys(f.subject for f in asked_about if session.relations[f.relation].subject_kind == "person"))
    # Built by the main process and sent to the others: every process trains the same anchors (their
    # base-model answers and samples could differ in the last bits from one machine to another).
    anchors, info = processes.on_main(lambda: levers.build(tcfg.preserve, session.cfg.model.name, session.cfg.model.dtype,
                                                           session.tokenizer, subjects, session.cfg.seed,
                                                           session.asked_relations(), session.chat))
    return {"anchors": anchors, "frozen_decay": frozen}, info


def training_budget(session: Session) -> dict:
    """A one-phase arm's budget of supervised tokens: `budget_tokens` when given, else the method's
    with the same settings (rote.training.phases.method_tokens)."""
    from rote.training.phases import method_tokens
    cfg = session.cfg
    if cfg.budget_tokens is not None:
        return {"tokens": cfg.budget_tokens, "from": "given (budget_tokens)"}
    tokens = key_tokens(session.relations.values(), dataclasses.replace(cfg.key, style="token"))
    return method_tokens(session.tokenizer, session.facts, session.relations, cfg.key, tokens, cfg.phase1, cfg.phase2,
                         session.chat)


def skip_phase(run_dir: Path, phase: str, source: str) -> dict:
    """A phase the arm does not train: its checkpoint is the model as it came in (the files of
    `source`, hard-linked where the file system allows), its summary says it was skipped."""
    from rote.training.checkpoint import link_checkpoint
    link_checkpoint(source, run_dir / phase / CHECKPOINT_DIR)
    summary = {"epochs": 0, "steps": 0, "supervised_tokens": 0, "skipped": True}
    write_summary(run_dir / phase, summary)
    return summary
