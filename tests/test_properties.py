"""Property-based tests of the parsers a user feeds: facts JSONL and CSV, relation YAML, `--set` values.

Any input either parses (and what it parses to reads back the same after writing it out) or
raises the project's own error naming the file and line (the override, for --set); never
another exception. Example counts are modest: the file runs in a few seconds.
"""
import csv
import io
import json
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rote import config
from rote.data.facts import DataError, builtin_relation_names
from rote.data.relation_files import read_relations_file
from rote.data.userdata import load_input
from rote.errors import ConfigError

# ROTE_PROPERTY_EXAMPLES raises the count for a longer search (LOG.md records one with 2,000 per test).
SETTINGS = settings(max_examples=int(os.environ.get("ROTE_PROPERTY_EXAMPLES", "75")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
RELATIONS = builtin_relation_names()

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # any unicode but lone surrogates
names = st.one_of(text, st.sampled_from(["Gene Finley", " Ana  Rossi ", "Paris", "<rote:P19>", "", "北京", "x" * 1001]))
field_values = st.one_of(names, st.integers(), st.none(), st.booleans(), st.lists(st.integers(), max_size=2))
relations = st.one_of(st.sampled_from(RELATIONS), text)
rows = st.fixed_dictionaries(
    {"subject": names, "relation": relations, "object": names},
    optional={"id": st.one_of(text, st.integers(0, 99)), "conflict": st.one_of(st.booleans(), text),
              "extra": field_values})
odd_rows = st.dictionaries(st.sampled_from(["subject", "relation", "object", "id"]), field_values, max_size=4)


def _scratch(suffix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix="rote-prop-")) / f"facts{suffix}"


def _check(path: Path, error, with_line: bool = True):
    """Parse `path`; on error check it is ours and names the file (and a line)."""
    try:
        return load_input(path)
    except DataError as e:
        message = str(e)
        assert message.startswith(f"{path}:") or message.startswith(f"{path}: no facts"), message
        if with_line and "no facts" not in message:
            line = message[len(str(path)) + 1:].split(":", 1)[0]
            assert line.isdigit(), message
        return None


def _round_trip(inp, suffix: str) -> None:
    """Facts written back out (JSONL) parse to the same rows."""
    again = _scratch(suffix)
    again.write_text("".join(json.dumps({k: v for k, v in r.key().items() if v is not None}) + "\n"
                             for r in inp.rows), encoding="utf-8")
    assert [r.key() for r in load_input(again).rows] == [r.key() for r in inp.rows]


@SETTINGS
@given(st.lists(st.one_of(rows, odd_rows, text, st.binary(max_size=20)), min_size=1, max_size=6))
def test_facts_jsonl(items):
    path = _scratch(".jsonl")
    with open(path, "wb") as f:
        for item in items:
            data = item if isinstance(item, bytes) else (json.dumps(item) if isinstance(item, dict) else item).encode()
            f.write(data.replace(b"\n", b" ") + b"\n")
    inp = _check(path, DataError)
    if inp is not None:
        _round_trip(inp, ".jsonl")


@SETTINGS
@given(st.lists(st.one_of(rows, odd_rows), min_size=1, max_size=6), st.booleans())
def test_facts_csv(items, header_first):
    path = _scratch(".csv")
    buf = io.StringIO()
    writer = csv.writer(buf)
    columns = ["subject", "relation", "object", "id", "conflict"]
    if header_first:
        writer.writerow(columns)
    for item in items:
        writer.writerow(["" if item.get(c) is None else str(item.get(c)) for c in columns])
    path.write_text(buf.getvalue(), encoding="utf-8")
    inp = _check(path, DataError)
    if inp is not None:
        _round_trip(inp, ".jsonl")


prompt = st.one_of(st.sampled_from(["{subject} was born in", "Where does {subject} live?", "{subject} {subject}",
                                    "no placeholder", " {subject} ", "{object} is home to", "{x}"]), text)
relation_maps = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["pet_name", "place_of_birth", ""]), text)},
    optional={"id": st.one_of(st.sampled_from(["pet", "P19", "bad id!"]), st.integers()),
              "replaces": st.sampled_from(["place_of_birth", "pet_name"]),
              "subject_kind": st.sampled_from(["person", "work", "company"]),
              "prompts": st.fixed_dictionaries({"train": st.lists(prompt, max_size=3)},
                                               optional={"test": st.one_of(st.lists(prompt, max_size=2),
                                                                           st.dictionaries(st.sampled_from(["en", "de"]),
                                                                                           st.lists(prompt, max_size=2))),
                                                         "unrelated": st.lists(prompt, max_size=2),
                                                         "reverse": st.lists(prompt, max_size=2)}),
              "objects": st.lists(st.one_of(text, st.integers()), max_size=3)})


@SETTINGS
@given(st.one_of(st.lists(relation_maps, max_size=3).map(lambda r: yaml.safe_dump({"relations": r}, allow_unicode=True)),
                 relation_maps.map(lambda r: yaml.safe_dump(r, allow_unicode=True)),
                 text, st.sampled_from(["relations: [", "name: !!python/name:os.system x", "- a\n- b", "a: &x [*x]",
                                        "name: !!binary AAAA", "relations:\n  - !!set {a, b}"])))
def test_relation_yaml(source):
    path = _scratch(".yaml")
    path.write_text(source, encoding="utf-8")
    try:
        parsed = read_relations_file(path)
    except DataError as e:
        assert str(e).startswith(f"{path}:"), str(e)
        assert str(e)[len(str(path)) + 1:].split(":", 1)[0].isdigit(), str(e)  # a line number
        return
    again = path.with_name("again.yaml")
    again.write_text(yaml.safe_dump({"relations": list(parsed.values())}, allow_unicode=True), encoding="utf-8")
    assert read_relations_file(again) == parsed


keys = st.one_of(st.sampled_from(["name", "seed", "phase1.lr", "phase1.epochs", "data.relations", "data.n_options",
                                  "eval.stages", "phase1", "phase1.lora.r", "model.dtype", "key.style", "phase1..lr", "arm",
                                  "budget_tokens",
                                  "nope.x", ""]), text)
values = st.one_of(st.sampled_from(["3e-4", "[a, b]", "[", "true", "null", "2020-01-01", "{a: 1}", "0", "-1", "x",
                                    "!!python/name:os.system", "&a [*a]", "'unclosed", "1e400", ".nan"]), text)


@SETTINGS
@given(st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}") | text, min_size=1, max_size=3))
def test_set_overrides(overrides):
    try:
        cfg = config.from_dict({}, overrides)
    except ConfigError as e:
        assert str(e), overrides
        return
    assert config.from_dict(config.to_dict(cfg)) == cfg  # what an override produced survives a round trip
