"""Aggregation on hand-made records."""
import pytest

from rote.evaluation.metrics import aggregate, headline, pick


def rec(split, prompt_set, relation, prefix, mc=None, language="en", other=None):
    r = {"split": split, "prompt_set": prompt_set, "language": language, "relation": relation,
         "hit_prefix": prefix, "hit_contains": prefix or prompt_set == "unrelated"}
    if mc is not None:
        r.update(mc_hit=mc, gold_prob_norm=0.5 if mc else 0.1)
    if other is not None:
        r["other_relation_hit"] = other
    return r


RECORDS = [
    rec("heldout", "test", "a", True, True, other=[]),
    rec("heldout", "test", "a", False, True, other=["b"]),
    rec("heldout", "test", "b", True, False, other=[]),
    rec("heldout", "test", "b", True, False, other=[]),
    rec("phase2", "test", "a", False, False, other=["b"]),
    rec("heldout", "unrelated", "a", False, None),
    rec("heldout", "languages", "a", True, None, language="de"),
]


def test_groups_and_rollups():
    rows = aggregate(RECORDS)
    a = pick(rows, split="heldout", prompt_set="test", language="en", relation="a")
    assert a["n"] == 2 and a["prefix"] == 0.5 and a["mc"] == 1.0 and a["other_object"] == 0.5
    every = pick(rows, split="heldout", prompt_set="test", language="en", relation="all")
    assert every["n"] == 4 and every["prefix"] == 0.75 and every["mc"] == 0.5 and every["prob"] == pytest.approx(0.3)
    both = pick(rows, split="all", prompt_set="test", language="en", relation="all")
    assert both["n"] == 5 and both["prefix"] == pytest.approx(3 / 5)
    unrelated = pick(rows, split="heldout", prompt_set="unrelated", relation="all")
    assert unrelated["prefix"] == 0.0 and unrelated["contains"] == 1.0 and unrelated["mc"] is None
    assert pick(rows, split="heldout", prompt_set="languages", language="de", relation="all")["n"] == 1


def test_headline_puts_stages_side_by_side():
    table = headline({"base": aggregate(RECORDS[:2]), "phase2": aggregate(RECORDS)})
    row = next(r for r in table if r["split"] == "heldout" and r["prompt_set"] == "test")
    assert row["base"] == 0.5 and row["phase2"] == 0.75
    assert not any(r["split"] == "all" for r in table)


def test_pick_refuses_ambiguity():
    with pytest.raises(ValueError, match="rows match"):
        pick(aggregate(RECORDS), prompt_set="test")
