"""Seeded fictional subjects and fact sets. No model, no tokenizer: same seed, same facts.

Subjects are invented (so no model can know them); objects are real strings from each
relation's pool, paired at random. Two subject modes:
- `separate` (the paper's): every fact has its own subject;
- `shared`: each invented subject has one fact in every chosen relation of its kind, and
  relations with the same object kind (place of birth / residence) get different objects,
  so only the relation, i.e. the key token, tells the answers apart.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from functools import cache
from importlib import resources

import yaml

from rote.data.facts import DataError, Fact, Relation


@cache
def _names() -> dict:
    return yaml.safe_load((resources.files("rote.data") / "names.yaml").read_text(encoding="utf-8"))


@cache
def famous_names() -> frozenset[str]:
    """Lower-cased real names (people, works, countries) that a generated subject must never be."""
    raw = yaml.safe_load((resources.files("rote.data") / "famous.yaml").read_text(encoding="utf-8"))
    return frozenset(n.lower() for group in raw.values() for n in group)


def _person(rng: random.Random) -> str:
    n = _names()
    return f"{rng.choice(n['first_names'])} {rng.choice(n['last_names'])}"


def _work(rng: random.Random) -> str:
    words = _names()["title_words"]
    pattern = rng.choice(words["patterns"])
    # Fill placeholders one at a time so "{noun} of {noun}" gets two different nouns.
    while "{adj}" in pattern or "{noun}" in pattern:
        slot = "{adj}" if "{adj}" in pattern else "{noun}"
        pool = words["adjectives"] if slot == "{adj}" else words["nouns"]
        pattern = pattern.replace(slot, rng.choice(pool), 1)
    return pattern


def _country(rng: random.Random) -> str:
    s = _names()["country_syllables"]
    middle = rng.choice(s["middles"]) if rng.random() < 0.6 else ""
    return rng.choice(s["starts"]) + middle + rng.choice(s["ends"])


_MAKERS = {"person": _person, "work": _work, "country": _country}


@cache
def name_pool(kind: str) -> int:
    """How many distinct names the generator of `kind` can make at most: the product of its lists'
    sizes (famous names and the relations' objects, left out when drawing, make it a little less)."""
    n = _names()
    if kind == "person":
        return len(set(n["first_names"])) * len(set(n["last_names"]))
    if kind == "country":  # a middle syllable, or none
        s = n["country_syllables"]
        return len(set(s["starts"])) * (len(set(s["middles"])) + 1) * len(set(s["ends"]))
    words = n["title_words"]
    size = {"{adj}": len(set(words["adjectives"])), "{noun}": len(set(words["nouns"]))}
    return sum(math.prod(size[slot] for slot in re.findall(r"\{adj\}|\{noun\}", p)) for p in set(words["patterns"]))


def fictional_subjects(kind: str, n: int, rng: random.Random, taken: set[str]) -> list[str]:
    """`n` new distinct invented names of `kind`; adds them to `taken` (lower-cased)."""
    if kind not in _MAKERS:
        raise DataError(f"no generator for subject kind {kind!r} (known: {sorted(_MAKERS)})")
    out: list[str] = []
    for _ in range(n * 1000):
        if len(out) == n:
            return out
        name = _MAKERS[kind](rng)
        if name.lower() in taken or name.lower() in famous_names():
            continue
        taken.add(name.lower())
        out.append(name)
    raise DataError(f"could not invent {n} distinct {kind} names; the name lists are too small")


def _options(gold: str, pool: tuple[str, ...], n_options: int, rng: random.Random, relation: str) -> tuple[str, ...]:
    others = [o for o in pool if o != gold]
    if len(others) < n_options - 1:
        raise DataError(f"relation {relation}: {n_options} options need {n_options} objects, the pool has {len(pool)}")
    options = rng.sample(others, n_options - 1) + [gold]
    rng.shuffle(options)  # the gold's position is random, never last by construction
    return tuple(options)


def _objects(relation: Relation, n: int, rng: random.Random) -> list[str]:
    """Random objects for `n` facts: without repeats while the pool allows."""
    pool = list(relation.objects)
    if n <= len(pool):
        return rng.sample(pool, n)
    return [rng.choice(pool) for _ in range(n)]


def make_facts(
    relations: list[Relation],
    facts_per_relation: int,
    phase2_facts: int,
    subjects: str = "separate",
    n_options: int = 100,
    seed: int = 0,
) -> list[Fact]:
    """The fact set: `facts_per_relation` facts per relation, the first `phase2_facts` of each
    relation (in a seeded order) marked for phase 2, the rest held out."""
    if not 0 <= phase2_facts <= facts_per_relation:
        raise DataError(f"phase2_facts={phase2_facts} must lie between 0 and facts_per_relation={facts_per_relation}")
    if subjects not in ("separate", "shared"):
        raise DataError(f"unknown subject mode {subjects!r} (use 'separate' or 'shared')")
    if len({r.name for r in relations}) != len(relations):
        raise DataError(f"a relation is listed twice: {[r.name for r in relations]}")
    # More names than the lists can make: refuse now, since fictional_subjects would draw n x 1000
    # times before giving up (minutes, with no message, at 100,000 facts).
    for kind, count in Counter(r.subject_kind for r in relations).items():
        needed = facts_per_relation * (count if subjects == "separate" else 1)
        if kind in _MAKERS and needed > name_pool(kind):
            each = f" x {count} relations with {kind} subjects" if needed > facts_per_relation else ""
            raise DataError(f"data.facts_per_relation={facts_per_relation}{each} needs {needed:,} distinct invented "
                            f"{kind} names, but the name lists make at most {name_pool(kind):,}; ask for fewer facts")
    rng = random.Random(seed)
    # Never invent a subject that is also an answer of one of the chosen relations.
    taken = {o.lower() for r in relations for o in r.objects}
    facts: list[Fact] = []
    if subjects == "separate":
        for rel in relations:
            names = fictional_subjects(rel.subject_kind, facts_per_relation, rng, taken)
            for i, (subject, obj) in enumerate(zip(names, _objects(rel, facts_per_relation, rng))):
                facts.append(_fact(rel, i, subject, f"{rel.id}:{i:04d}", obj, i < phase2_facts, n_options, rng))
        return facts

    by_kind: dict[str, list[Relation]] = {}
    for rel in relations:
        by_kind.setdefault(rel.subject_kind, []).append(rel)
    for kind, rels in by_kind.items():
        names = fictional_subjects(kind, facts_per_relation, rng, taken)
        objects = {rel.name: _objects(rel, facts_per_relation, rng) for rel in rels}
        for i, subject in enumerate(names):
            used: dict[str, set[str]] = {}  # object kind -> objects this subject already has
            for rel in rels:
                obj = objects[rel.name][i]
                seen = used.setdefault(rel.object_kind, set())
                while obj in seen:  # same answer type, same subject: objects must differ
                    obj = rng.choice(rel.objects)
                seen.add(obj)
                facts.append(_fact(rel, i, subject, f"{kind}:{i:04d}", obj, i < phase2_facts, n_options, rng))
    return facts


TWO_HOP_FIRST_ID = 10_000  # second-hop facts are numbered from here (or after the relation's own facts, if more)


@cache
def two_hop_prompts() -> dict[str, tuple[str, ...]]:
    """"first+second" -> prompts asking for the second fact of the first fact's object."""
    raw = yaml.safe_load((resources.files("rote.data") / "two_hop.yaml").read_text(encoding="utf-8"))
    return {pair: tuple(prompts) for pair, prompts in raw.items()}


def add_two_hop_facts(facts: list[Fact], first: Relation, second: Relation, n_options: int, seed: int) -> list[Fact]:
    """`facts` plus one `second` fact for every distinct object of a `first` fact, held out.

    With first = mother, second = place_of_birth: each mother gets a birthplace, memorized in
    phase 1 like any fact, so "Where was {subject}'s mother born?" needs the mother fact and
    then her birthplace fact."""
    pair = f"{first.name}+{second.name}"
    if pair not in two_hop_prompts():
        raise DataError(f"data.two_hop={[first.name, second.name]}: no two-hop prompts for {pair!r} "
                        f"(known: {sorted(two_hop_prompts())})")
    if first.object_kind != "person" or second.subject_kind != "person":
        raise DataError(f"data.two_hop: {first.name}'s objects must be people that {second.name} can describe")
    rng = random.Random(f"two-hop-{seed}")
    firsts = sorted({f.object for f in facts if f.relation == first.name})
    if not firsts:
        raise DataError(f"data.two_hop: no {first.name} facts to start from (add {first.name} to data.relations)")
    taken = {f.subject for f in facts}
    clash = [o for o in firsts if o in taken]
    if clash:
        raise DataError(f"data.two_hop: {clash[0]!r} is both a subject and a {first.name} object")
    objects = _objects(second, len(firsts), rng)
    # After the second relation's own facts (numbered from 0), so that no id repeats when it has more
    # than TWO_HOP_FIRST_ID of them; below that, the ids runs have always had.
    start = max(TWO_HOP_FIRST_ID, sum(f.relation == second.name for f in facts))
    extra = [_fact(second, start + j, subject, f"{first.name}-object:{j:04d}", obj, False, n_options, rng)
             for j, (subject, obj) in enumerate(zip(firsts, objects))]
    return facts + extra


def _fact(rel: Relation, i: int, subject: str, subject_id: str, obj: str, phase2: bool, n_options: int, rng) -> Fact:
    return Fact(
        id=f"{rel.id}:{i:04d}",
        subject=subject,
        subject_id=subject_id,
        relation=rel.name,
        object=obj,
        options=_options(obj, rel.objects, n_options, rng, rel.name),
        split="phase2" if phase2 else "heldout",
    )
