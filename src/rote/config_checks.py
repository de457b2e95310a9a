"""The checks of a run config that need nothing but the config: ranges, lists, run names, and the
settings that only work together. Pure: no torch. rote.config calls `check_values` on every config
it builds; what needs the relations' files or the model's tokenizer is checked before a run writes
anything (rote.data.factset.check_relations, rote.preflight.check_inputs).
"""
from __future__ import annotations

import dataclasses
import math

from rote.arms import ARMS
from rote.errors import ConfigError, quote


def plain_name(value: str, what: str) -> str:
    """A run or stage name becomes a folder name: a plain name, so it can never point outside its parent."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise ConfigError(f"{what} {quote(value)} must be a plain name (no '/', '\\', '..' or surrounding spaces)")
    return value


# Allowed ranges: a value outside them would fail much later, deep inside training or sampling
# ("Sample larger than population"), or train on nonsense, so it is refused here. (low, high):
# inclusive bounds, None for none; a low written as a string ("> 0") excludes the bound itself.
_BOUNDS = {"data.facts_per_relation": (1, None), "data.phase2_facts": (0, None), "data.n_options": (1, None),
           "eval.prompts_per_set": (1, None), "eval.max_new_tokens": (1, None), "eval.batch_size": (1, None),
           "eval.fluency_prompts": (0, None),
           "eval.icl_examples": (1, None), "phase1.threshold": ("> 0", 1), "phase2.n_prompts": (1, None),
           "phase2.patience": (1, None), "phase2.validation_prompts": (1, None), "budget_tokens": (1, None),
           "seed": (0, 2**32 - 1)}  # seeds are mixed into torch generators' 64-bit seeds (rote.training.loop)
for _phase in ("phase1", "phase2"):
    _BOUNDS.update({f"{_phase}.epochs": (1, None), f"{_phase}.lr": ("> 0", None), f"{_phase}.batch_size": (1, None),
                    f"{_phase}.grad_accum": (1, None), f"{_phase}.warmup_steps": (0, None),
                    f"{_phase}.weight_decay": (0, None), f"{_phase}.max_grad_norm": (0, None),
                    f"{_phase}.lora.r": (1, None), f"{_phase}.lora.alpha": (1, None), f"{_phase}.lora.dropout": (0, 0.99),
                    f"{_phase}.preserve.contrast": (0, None), f"{_phase}.preserve.replay": (0, None),
                    f"{_phase}.preserve.known_facts": (0, None), f"{_phase}.preserve.weight": ("> 0", None),
                    f"{_phase}.preserve.batch_size": (1, None)})


def value_at(cfg, dotted: str):
    """The setting `dotted` ("phase1.preserve.contrast") of a RunConfig."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_bounds(cfg, source: str) -> None:
    for key, (low, high) in _BOUNDS.items():
        value = value_at(cfg, key)
        if value is None:  # an optional value left to its default
            continue
        exclusive = isinstance(low, str)
        bound = float(low[2:]) if exclusive else low
        if value < bound or (exclusive and value == bound) or (high is not None and value > high):
            span = (f"> {low[2:]}" if exclusive else f">= {low}") + ("" if high is None else f" and <= {high}")
            raise ConfigError(f"{source}: {key}={value} must be {span}")


def _check_finite(cfg, source: str, prefix: str = "") -> None:
    """No setting is NaN or infinite: NaN passes every range comparison (lr=nan, max_grad_norm=nan
    would train on nonsense or not clip at all) and inf trains to a NaN loss that reads as a result."""
    for field in dataclasses.fields(cfg):
        value, key = getattr(cfg, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            _check_finite(value, source, key + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{source}: {key}={value} must be a finite number")


def _check_lists(cfg, source: str) -> None:
    """No list names an element twice (a relation, a stage, a prompt set, a language)."""
    for key in ("data.relations", "data.two_hop", "eval.prompt_sets", "eval.languages", "eval.mc_prompt_sets",
                "eval.stages", "phase1.save_epochs", "phase1.update.layers", "phase1.update.modules",
                "phase2.update.layers", "phase2.update.modules"):
        values = list(value_at(cfg, key))
        twice = [v for v in values if values.count(v) > 1]
        if twice:
            raise ConfigError(f"{source}: {key} names {twice[0]!r} twice")


def check_values(cfg, source: str = "config"):
    """Everything about a config that needs no file and no model: ranges, lists, and settings that
    only make sense together. Raises ConfigError naming the key."""
    plain_name(cfg.name, f"{source}: name")
    _check_finite(cfg, source)
    _check_bounds(cfg, source)
    _check_lists(cfg, source)
    for key in ("data.relations", "eval.prompt_sets"):  # an empty list would run and ask nothing
        if not value_at(cfg, key):
            raise ConfigError(f"{source}: {key} is empty: name at least one")
    if cfg.data.phase2_facts > cfg.data.facts_per_relation:
        raise ConfigError(f"{source}: data.phase2_facts={cfg.data.phase2_facts} must not exceed "
                          f"data.facts_per_relation={cfg.data.facts_per_relation}")
    if cfg.data.two_hop and (len(cfg.data.two_hop) != 2 or not set(cfg.data.two_hop) <= set(cfg.data.relations)):
        raise ConfigError(f"{source}: data.two_hop={list(cfg.data.two_hop)} must name two relations of "
                          f"data.relations {list(cfg.data.relations)}")
    if "two_hop" in cfg.eval.prompt_sets and not cfg.data.two_hop:
        raise ConfigError(f"{source}: eval.prompt_sets asks two_hop, which needs data.two_hop (the second facts)")
    if "repurposed" in cfg.eval.prompt_sets and not (cfg.phase2.prompts_from or cfg.eval.repurposed_prompts):
        raise ConfigError(f"{source}: eval.prompt_sets asks repurposed, which needs phase2.prompts_from or "
                          "eval.repurposed_prompts (the relation whose prompts it asks)")
    for phase in ("phase1", "phase2"):
        tcfg = getattr(cfg, phase)
        if tcfg.method == "lora" and tcfg.update != type(tcfg.update)():
            raise ConfigError(f"{source}: {phase}.update is for full fine-tuning; with {phase}.method: lora the "
                              f"adapters ({phase}.lora.target_modules) and the key-token rows are what trains")
    if ARMS[cfg.arm].budget and cfg.budget_tokens is not None and cfg.budget == "epochs":
        raise ConfigError(f"{source}: budget_tokens={cfg.budget_tokens} gives a budget, but budget: epochs trains "
                          "phase 1's epochs instead; leave one of them out")
    # A budget matched to the method's tokens counts its epochs; a method that stops on a signal
    # (phase1.until: memorized, phase2.until: validation) has no token count before it runs.
    matched = ARMS[cfg.arm].budget and cfg.budget == "matched" and cfg.budget_tokens is None
    for phase in ("phase1", "phase2"):
        if matched and getattr(cfg, phase).until != "epochs":
            raise ConfigError(f"{source}: arm {cfg.arm} trains to the method's token budget, which needs the "
                              f"method's phase-{phase[-1]} epochs: set {phase}.until=epochs (or budget_tokens, or "
                              "budget: epochs)")
    late = [e for e in cfg.phase1.save_epochs if not 1 <= e <= cfg.phase1.epochs]
    if late:
        raise ConfigError(f"{source}: phase1.save_epochs={list(cfg.phase1.save_epochs)}: epoch {late[0]} is not "
                          f"among phase 1's epochs 1..{cfg.phase1.epochs}")
    return cfg
