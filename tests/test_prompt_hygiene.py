"""Prompt hygiene: no shipped test or unrelated prompt repeats a training prompt's words, the rule
itself flags leaks, and a user relation file with a leak warns, naming both prompts."""
import warnings
from pathlib import Path

import pytest
import yaml

import rote
from rote.data.facts import PromptOverlapWarning, load_relation, relation_from_dict
from rote.data.prompt_hygiene import MAX_SHARED_WORDS, overlaps, prompts_overlap, two_hop_overlaps, words
from rote.data.relation_files import load_relations_file
from rote.data.relation_files import read_relations_file

ROOT = Path(__file__).parent.parent
SHIPPED = sorted((Path(rote.__file__).parent / "data" / "relations").glob("*.yaml")) \
    + sorted((ROOT / "configs" / "relations").glob("*.yaml")) + [ROOT / "examples" / "relations.yaml"]


def test_every_kind_of_relation_file_is_checked():
    assert len(SHIPPED) >= 10 and all(p.is_file() for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_relation_file_has_no_prompt_overlap(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptOverlapWarning)  # loading it must not warn either
        builtin = path.parent == Path(rote.__file__).parent / "data" / "relations"
        relations = [load_relation(path.stem)] if builtin else load_relations_file(path)
    problems = [line for r in relations for line in overlaps(r)]
    assert not problems, "\n".join(problems)


def _relation(train, test, unrelated=()):
    raw = {"id": "U1", "name": "home", "subject_kind": "person", "object_kind": "city",
           "prompts": {"train": list(train), "test": test, "unrelated": list(unrelated)}, "objects": ["Paris", "Rome"]}
    return relation_from_dict(raw, "test")


def test_words_keep_placeholders_whole():
    assert words("Q: What is {subject}'s city? A:") == ("q", "what", "is", "{subject}'s", "city", "a")
    assert words("{object} is the home of") == ("{object}", "is", "the", "home", "of")
    assert MAX_SHARED_WORDS == 3


def test_containment_is_flagged():
    # the audit's case: the old place_of_residence test.en[0] contained train[0] word for word
    assert prompts_overlap("These days, {subject} lives in", "{subject} lives in")
    (line,) = overlaps(_relation(["{subject} lives in"], ["These days, {subject} lives in"]))
    assert "relation home" in line and "test.en[0]" in line and "train[0]" in line
    assert "'These days, {subject} lives in'" in line and "'{subject} lives in'" in line


def test_four_shared_words_are_flagged_three_are_not():
    assert prompts_overlap("Everyone knows {subject} settled down in", "Later {subject} settled down in the city of")
    assert not prompts_overlap("Everyone knows {subject} settled down near", "Later {subject} settled down in the city")
    # generic openings are allowed
    assert not prompts_overlap("What is {subject}'s favourite colour?", "What is {subject}'s shoe size?")
    assert not overlaps(_relation(["Where does {subject} live?"], ["Where does {subject} reside?"]))


def test_every_language_is_checked():
    rel = _relation(["{subject} lives in"], {"en": ["Which city is {subject} from?"],
                                              "de": ["Heute: {subject} lives in"]})
    assert [line.split(" overlaps ")[0] for line in overlaps(rel)] == ["relation home: test.de[0] 'Heute: {subject} lives in'"]


def test_unrelated_prompt_copying_a_test_or_train_prompt_is_flagged():
    rel = _relation(["{subject} lives in"], ["Which city is {subject} a resident of?"],
                    unrelated=["Which city is {subject} a fan of?", "{subject}'s favourite colour is",
                               "Nowadays {subject} lives in"])
    lines = overlaps(rel)
    assert len(lines) == 2, lines
    assert "unrelated[0] 'Which city is {subject} a fan of?'" in lines[0] and "test.en[0]" in lines[0]
    assert "unrelated[2] 'Nowadays {subject} lives in'" in lines[1] and "train[0]" in lines[1]


LEAKY = {"relations": [{"id": "HOME", "name": "home", "subject_kind": "person", "object_kind": "city", "prompts": {
    "train": ["{subject} lives in", "Where does {subject} live?"],
    "test": ["These days, {subject} lives in", "Which city is {subject} a resident of?"]},
    "objects": ["Paris", "Rome"]}]}


def test_user_relation_file_with_a_leak_warns(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(LEAKY))
    for load in (load_relations_file, read_relations_file):  # rote run / rote inject
        with pytest.warns(PromptOverlapWarning) as record:
            load(f)
        (message,) = [str(w.message) for w in record if w.category is PromptOverlapWarning]
        assert "mine.yaml" in message and "relation home" in message
        assert "'These days, {subject} lives in'" in message and "'{subject} lives in'" in message


def test_no_two_hop_prompt_contains_a_training_prompt_of_either_hop():
    from rote.data.synth import two_hop_prompts
    problems = [line for pair, templates in two_hop_prompts().items()
                for line in two_hop_overlaps(pair, templates, {n: load_relation(n) for n in pair.split("+")})]
    assert not problems, "\n".join(problems)


def test_two_hop_prompt_ending_in_the_first_hops_question_is_flagged():
    relations = {"mother": load_relation("mother"), "place_of_birth": load_relation("place_of_birth")}
    lines = two_hop_overlaps("mother+place_of_birth", ["The birthplace of {subject}'s mother is",
                                                       "The mother of {subject} was born in",
                                                       "Where was {subject}'s mother born?"], relations)
    assert [line.split(" contains ")[1].split(" train")[0] for line in lines] == ["mother", "place_of_birth"]


def test_a_warning_is_one_line_shown_once(tmp_path):
    """Outside a test's warning capture (as a user runs rote), a prompt-overlap warning is one line,
    `warning: FILE:LINE: ...`, without Python's format and source line, and the same finding in a copy
    of the file (rote inject's run folder) is not shown again."""
    import subprocess
    import sys
    for name in ("input.yaml", "copy.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(LEAKY))
    code = ("from rote.data.relation_files import read_relations_file as r; import sys; "
            "r(sys.argv[1]); r(sys.argv[2]); r(sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "input.yaml"), str(tmp_path / "copy.yaml")],
                            capture_output=True, text=True, check=True)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {tmp_path / 'input.yaml'}:2: prompt overlap, relation home")
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr
