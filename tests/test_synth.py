"""Fictional fact sets: determinism, both subject modes, options, splits, no famous names."""
import hashlib
import random
import time
from collections import Counter

import pytest

from rote.data.facts import DataError, load_relation, write_facts
from rote.data.synth import famous_names, fictional_subjects, make_facts

PEOPLE = ["place_of_birth", "place_of_residence", "educated_at"]


def _rels(*names):
    return [load_relation(n) for n in names]


def _digest(facts, tmp_path, name):
    write_facts(facts, tmp_path / name)
    return hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path):
    rels = _rels("author", "capital", "mother")
    a = _digest(make_facts(rels, 30, 10, seed=7), tmp_path, "a.jsonl")
    b = _digest(make_facts(rels, 30, 10, seed=7), tmp_path, "b.jsonl")
    c = _digest(make_facts(rels, 30, 10, seed=8), tmp_path, "c.jsonl")
    assert a == b != c


def test_separate_mode_counts_splits_and_options():
    facts = make_facts(_rels("author", "genre", "capital"), 40, 15, n_options=100, seed=0)
    assert len(facts) == 120
    assert Counter((f.relation, f.split) for f in facts)[("genre", "phase2")] == 15
    assert len({f.subject for f in facts}) == 120  # every fact has its own subject
    for f in facts:
        assert len(f.options) == 100 and len(set(f.options)) == 100 and f.object in f.options
        assert set(f.options) <= set(load_relation(f.relation).objects)
    positions = Counter(f.options.index(f.object) for f in facts)
    assert len(positions) > 30  # the gold is shuffled in, not always last
    assert len({f.id for f in facts}) == 120


def test_shared_mode_same_subject_different_cities():
    facts = make_facts(_rels(*PEOPLE), 50, 20, subjects="shared", seed=1)
    by_subject = {}
    for f in facts:
        by_subject.setdefault(f.subject_id, {})[f.relation] = f
    assert len(by_subject) == 50
    for rels in by_subject.values():
        assert set(rels) == set(PEOPLE)
        assert len({r.subject for r in rels.values()}) == 1
        assert rels["place_of_birth"].object != rels["place_of_residence"].object
        assert len({r.split for r in rels.values()}) == 1  # a person is in phase 2 for all relations or none


def test_subjects_are_never_famous_or_objects():
    rng = random.Random(0)
    taken = set()
    names = fictional_subjects("person", 2000, rng, taken) + fictional_subjects("work", 500, rng, taken) \
        + fictional_subjects("country", 300, rng, taken)
    assert len(set(names)) == len(names)
    assert not {n.lower() for n in names} & famous_names()
    assert {"albert einstein", "the great gatsby", "france"} <= famous_names()  # the deny-list is real
    facts = make_facts(_rels("mother"), 100, 10, seed=3)
    mothers = {o.lower() for o in load_relation("mother").objects}
    assert not {f.subject.lower() for f in facts} & mothers


def test_bad_requests_are_named():
    with pytest.raises(DataError, match="phase2_facts=11"):
        make_facts(_rels("mother"), 10, 11)
    with pytest.raises(DataError, match="500 options"):
        make_facts(_rels("mother"), 10, 1, n_options=500)
    with pytest.raises(DataError, match="subject mode 'both'"):
        make_facts(_rels("mother"), 10, 1, subjects="both")


def test_two_hop_facts_give_each_first_object_one_held_out_fact():
    from rote.data.synth import TWO_HOP_FIRST_ID, add_two_hop_facts
    mother, birth = load_relation("mother"), load_relation("place_of_birth")
    base = make_facts([mother, birth], 8, 3, subjects="separate", n_options=5, seed=1)
    facts = add_two_hop_facts(base, mother, birth, n_options=5, seed=1)
    extra = facts[len(base):]
    assert facts[: len(base)] == base
    assert sorted(f.subject for f in extra) == sorted({f.object for f in base if f.relation == "mother"})
    assert all(f.relation == "place_of_birth" and f.split == "heldout" for f in extra)
    assert all(int(f.id.split(":")[1]) >= TWO_HOP_FIRST_ID for f in extra)
    assert len({f.id for f in facts}) == len(facts)
    assert add_two_hop_facts(base, mother, birth, n_options=5, seed=1) == facts  # seeded
    with pytest.raises(DataError, match="no two-hop prompts for 'place_of_birth\\+mother'"):
        add_two_hop_facts(base, birth, mother, n_options=5, seed=1)


def test_more_names_than_the_lists_make_are_refused_at_once():
    """100,000 facts per relation (65,000 person names) drew for minutes with no message; several
    relations of one subject kind draw from one pool in `separate` mode."""
    from rote.data.synth import name_pool
    assert name_pool("person") == 65_000
    started = time.monotonic()
    with pytest.raises(DataError, match=r"data.facts_per_relation=100000 needs 100,000 distinct invented person "
                                        r"names, but the name lists make at most 65,000"):
        make_facts(_rels("place_of_birth"), 100_000, 1)
    with pytest.raises(DataError, match=r"=40000 x 2 relations with person subjects needs 80,000"):
        make_facts(_rels("place_of_birth", "place_of_residence"), 40_000, 1)
    assert time.monotonic() - started < 2
    with pytest.raises(DataError, match=r"make at most 42,000"):
        make_facts(_rels("capital"), 50_000, 1)


def test_two_hop_ids_never_repeat_a_relations_own():
    """Second-hop facts were numbered from 10,000 whatever the relation's own count: with 10,002 facts
    per relation, P19:10000 and P19:10001 named two facts each."""
    from rote.data.synth import add_two_hop_facts
    mother, birth = load_relation("mother"), load_relation("place_of_birth")
    base = make_facts([mother, birth], 10_002, 1, n_options=2)
    facts = add_two_hop_facts(base, mother, birth, n_options=2, seed=0)
    assert len({f.id for f in facts}) == len(facts) > len(base)
