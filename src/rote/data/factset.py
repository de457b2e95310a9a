"""A run's fact set, planned from its config alone: the relations, the synthesized facts (two-hop
facts included) and their split. Pure: no torch, nothing written.

`rote run`'s data stage, `rote data` and a study's dry run all plan facts here, so they cannot
disagree on what a config's fact set is.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from rote.config import RunConfig
from rote.data.facts import DataError, Fact, Relation
from rote.data.prompt_hygiene import validation_prompts
from rote.data.relation_files import resolve_relations
from rote.data.synth import add_two_hop_facts, make_facts
from rote.errors import ConfigError


def relations_of(cfg: RunConfig) -> dict[str, Relation]:
    """name -> Relation for `data.relations` (user relations from `data.relations_file` first)."""
    return {r.name: r for r in resolve_relations(cfg.data.relations, cfg.data.relations_file)}


def check_relations(cfg: RunConfig) -> dict[str, Relation]:
    """The checks a config needs its relations for (read from their files; no model): enough training
    prompts for `phase2.n_prompts` (and for `phase2.validation_prompts` with phase2.until: validation),
    and the relations that `phase2.prompts_from` and `eval.repurposed_prompts` name. Returns the relations."""
    relations = relations_of(cfg)
    for key in ("phase2.prompts_from", "eval.repurposed_prompts"):
        name = getattr(cfg.phase2 if key.startswith("phase2") else cfg.eval, key.split(".")[1])
        if name:
            try:
                resolve_relations((name,), cfg.data.relations_file)
            except DataError as e:
                raise ConfigError(f"{key}={name}: {e}") from None
    trained = resolve_relations((cfg.phase2.prompts_from,), cfg.data.relations_file) if cfg.phase2.prompts_from \
        else relations.values()
    for rel in trained:
        if cfg.phase2.n_prompts > len(rel.train_prompts):
            raise ConfigError(f"phase2.n_prompts={cfg.phase2.n_prompts} but relation {rel.name} has "
                              f"{len(rel.train_prompts)} training prompts")
    if cfg.phase2.until == "validation":
        _check_validation_prompts(cfg, relations)
    return relations


def short_of_validation_prompts(cfg: RunConfig, relations: dict[str, Relation]) -> tuple[Relation, int] | None:
    """The first relation phase 2 trains with (`phase2.prompts_from`, else each of `relations`) that has
    fewer than `phase2.validation_prompts` validation prompts (rote.data.prompt_hygiene.validation_prompts)
    for some relation's facts, and how many it has; None when every one has enough."""
    p2 = cfg.phase2
    prompts_from, repurposed = (resolve_relations((name,), cfg.data.relations_file)[0] if name else None
                                for name in (p2.prompts_from, cfg.eval.repurposed_prompts or p2.prompts_from))
    for own in relations.values():
        found = validation_prompts(own, p2.n_prompts, p2.validation_prompts, prompts_from, repurposed)
        if len(found) < p2.validation_prompts:
            return prompts_from or own, len(found)
    return None


def _check_validation_prompts(cfg: RunConfig, relations: dict[str, Relation]) -> None:
    """Enough validation prompts (rote.data.prompt_hygiene.validation_prompts) for every relation's facts."""
    short = short_of_validation_prompts(cfg, relations)
    if short:
        rel, found = short
        p2 = cfg.phase2
        raise ConfigError(f"phase2.validation_prompts={p2.validation_prompts} but relation {rel.name} has "
                          f"{found} training prompts that phase 2 does not train and evaluation does not "
                          f"ask ({len(rel.train_prompts)} training prompts, phase2.n_prompts={p2.n_prompts}); "
                          "lower phase2.validation_prompts or phase2.n_prompts, or give the relation more")


def plan_facts(cfg: RunConfig) -> list[Fact]:
    """The fact set `cfg` describes: `data.facts_per_relation` invented facts per relation, the first
    `data.phase2_facts` of each for phase 2, and (data.two_hop) a held-out fact for every object of
    the first relation. Same config and seed, same facts."""
    relations = list(relations_of(cfg).values())
    for rel in relations:
        if cfg.data.n_options > len(rel.objects):
            raise ConfigError(f"data.n_options={cfg.data.n_options}: relation {rel.name} has only {len(rel.objects)} "
                              "objects to draw the options from")
    facts = make_facts(relations, cfg.data.facts_per_relation, cfg.data.phase2_facts, cfg.data.subjects,
                       cfg.data.n_options, cfg.seed)
    if cfg.data.two_hop:  # two names of data.relations (rote.config checks)
        by_name = {r.name: r for r in relations}
        first, second = (by_name[n] for n in cfg.data.two_hop)
        facts = add_two_hop_facts(facts, first, second, cfg.data.n_options, cfg.seed)
    return facts


def resplit(facts: list[Fact], phase2_facts: int) -> list[Fact]:
    """The same facts split by another k: the first `phase2_facts` facts of each relation, in the
    order the fact set lists them (make_facts writes each relation's facts in its seeded order, the
    phase-2 ones first), go to phase 2, the rest are held out. Second-hop facts follow a relation's
    own facts, so they are never among its first k."""
    rank: Counter = Counter()
    out = []
    for fact in facts:
        out.append(dataclasses.replace(fact, split="phase2" if rank[fact.relation] < phase2_facts else "heldout"))
        rank[fact.relation] += 1
    return out
