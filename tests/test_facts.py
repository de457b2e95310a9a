"""Relation files' invariants, relation validation errors, fact JSONL round trip."""
import pytest
import yaml

from rote.data.facts import DataError, Fact, builtin_relation_names, load_relation, read_facts, write_facts
from rote.data.relation_files import load_relations_file, resolve_relations
from rote.names import LANGUAGES

PAPER_AND_MORE = {"author": "P50", "capital": "P36", "educated_at": "P69", "genre": "P136", "mother": "P25",
                  "place_of_birth": "P19", "place_of_residence": "P551", "occupation": "P106"}


def test_all_relations_ship():
    assert set(PAPER_AND_MORE) <= set(builtin_relation_names())


@pytest.mark.parametrize("name", sorted(PAPER_AND_MORE))
def test_relation_file_invariants(name):
    r = load_relation(name)
    assert r.id == PAPER_AND_MORE[name] and r.name == name
    assert len(r.train_prompts) == 10 and len(set(r.train_prompts)) == 10
    assert set(r.test_prompts) == set(LANGUAGES)
    for lang, prompts in r.test_prompts.items():
        assert len(prompts) == 10 and len(set(prompts)) == 10, lang
    assert not set(r.train_prompts) & set(r.test_prompts["en"])
    assert len(r.unrelated_prompts) == 3
    assert all(p.count("{subject}") == 1 for p in r.train_prompts + r.unrelated_prompts)
    assert all(p.count("{object}") == 1 for p in r.reverse_prompts)
    objects = [o.lower() for o in r.objects]
    assert len(objects) >= 120 and len(set(objects)) == len(objects)
    prefixed = [(a, b) for a in objects for b in objects if a != b and b.startswith(a)]
    assert not prefixed, prefixed[:3]
    assert r.key_token == f"<rote:{r.id}>"


def test_birth_and_residence_share_the_city_pool():
    assert load_relation("place_of_birth").objects == load_relation("place_of_residence").objects


def test_unknown_relation_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown relation 'birthplace'.*place_of_birth"):
        load_relation("birthplace")


def _user_relation(**changes):
    raw = {"id": "U1", "name": "favourite_tool", "subject_kind": "person", "object_kind": "tool",
           "prompts": {"train": ["{subject}'s favourite tool is"], "test": ["{subject} likes to use a"]},
           "objects": ["hammer", "saw"]}
    raw.update(changes)
    return raw


def test_user_relations_file(tmp_path):
    f = tmp_path / "rel.yaml"
    f.write_text(yaml.safe_dump({"relations": [_user_relation()]}))
    (r,) = load_relations_file(f)
    assert r.test_prompts == {"en": ("{subject} likes to use a",)} and r.key_token == "<rote:U1>"


@pytest.mark.parametrize("kind", ["product", "coffee machine", "Unternehmen", "製品"])
def test_a_user_relation_may_be_about_any_kind_of_subject(tmp_path, kind):
    """A product catalogue is not refused: the kind names what the subjects are; rote invents subjects
    only of the built-in kinds, and the contrast questions ask about people only (rote.levers)."""
    f = tmp_path / "rel.yaml"
    f.write_text(yaml.safe_dump({"relations": [_user_relation(subject_kind=kind)]}, allow_unicode=True))
    assert load_relations_file(f)[0].subject_kind == kind


@pytest.mark.parametrize("change, message", [
    ({"prompts": {"train": ["favourite tool is"], "test": ["{subject} uses"]}}, "must contain {subject} exactly once"),
    ({"prompts": {"train": ["{subject} uses {object}"], "test": ["{subject} uses"]}}, "no other placeholder"),
    ({"prompts": {"train": ["{subject} uses"]}}, "missing prompts.test"),
    ({"objects": ["hammer", ""]}, "non-empty strings"),
    ({"subject_kind": "{subject}"}, "subject_kind '{subject}'"),
    ({"subject_kind": 3}, "subject_kind 3"),
])
def test_bad_user_relation_is_named(tmp_path, change, message):
    f = tmp_path / "rel.yaml"
    f.write_text(yaml.safe_dump(_user_relation(**change)))
    with pytest.raises(DataError, match="rel.yaml") as err:
        load_relations_file(f)
    assert message in str(err.value)


def test_one_relation_reader_for_run_and_inject(tmp_path):
    """`rote run --set data.relations_file=...` reads relation files as `rote inject` does: `id` and
    `subject_kind` may be left out (the relation's name; person)."""
    from rote.data import userdata
    from rote.data.relation_files import read_relations_file
    assert userdata.read_relations_file is read_relations_file  # inject's reader is this one
    raw = _user_relation()
    del raw["id"], raw["subject_kind"]
    f = tmp_path / "rel.yaml"
    f.write_text(yaml.safe_dump({"relations": [raw]}))
    (r,) = resolve_relations(("favourite_tool",), str(f))
    assert (r.id, r.subject_kind, r.key_token) == ("favourite_tool", "person", "<rote:favourite_tool>")
    assert read_relations_file(f)["favourite_tool"]["id"] == "favourite_tool"


def test_facts_round_trip(tmp_path):
    facts = [Fact("P19:0000", "Gene Finley", "person:0000", "place_of_birth", "Paris", ("Lyon", "Paris"), "phase2")]
    write_facts(facts, tmp_path / "f.jsonl")
    assert read_facts(tmp_path / "f.jsonl") == facts
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_facts(tmp_path / "bad.jsonl")


def test_gold_must_be_an_option():
    with pytest.raises(DataError, match="'Paris' is not among its options"):
        Fact("x", "s", "s", "r", "Paris", ("Lyon",), "phase2")
