"""Relations (prompts + object pools, from YAML) and facts (JSONL). Pure: no torch.

A relation file lives in `rote/data/relations/<name>.yaml` (or a user file); its schema:
id, name, label, description, subject_kind, object_kind,
prompts: {train: [...], test: {en: [...], de: [...], ...}, unrelated: [...], reverse: [...]},
objects: [...].
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from rote.errors import RoteError, RoteWarning, quote
from rote.fileio import write_jsonl

# The kinds rote can invent subjects of (rote.data.synth) and, for `person`, ask contrast questions
# about (rote.levers). A user relation may name any other kind ("product", "company"): its subjects
# come from the user's facts, and the levers that need a person leave them out (the card says so).
SUBJECT_KINDS = ("person", "work", "country")
_KIND = re.compile(r"^[^\W\d_][\w -]{0,59}$")
_PLACEHOLDER = re.compile(r"\{(\w*)\}")


class DataError(RoteError, ValueError):
    """A relation or fact file that breaks the format; the message names file and value."""
    exit_code = 2


@dataclass(frozen=True)
class Relation:
    id: str  # Wikidata property id, e.g. P19 (or a user id)
    name: str  # file stem, e.g. place_of_birth
    label: str
    description: str
    subject_kind: str
    object_kind: str
    train_prompts: tuple[str, ...]
    test_prompts: dict[str, tuple[str, ...]]  # language -> prompts; "en" always present
    unrelated_prompts: tuple[str, ...]
    reverse_prompts: tuple[str, ...]
    objects: tuple[str, ...]

    @property
    def key_token(self) -> str:
        """The added special token that stands for this relation in phase-1 text."""
        return f"<rote:{self.id}>"


def _check_prompts(prompts: list, placeholder: str, where: str) -> tuple[str, ...]:
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{where}: expected a non-empty list of prompts, got {prompts!r}")
    for p in prompts:
        if not isinstance(p, str) or _PLACEHOLDER.findall(p) != [placeholder]:
            raise DataError(f"{where}: prompt {p!r} must contain {{{placeholder}}} exactly once and no other placeholder")
        if p != p.strip():
            raise DataError(f"{where}: prompt {p!r} has leading or trailing whitespace")
    return tuple(prompts)


def relation_from_dict(raw: dict, source: str) -> Relation:
    """Validate one relation mapping; errors name `source` and the bad value."""
    required = ("id", "name", "subject_kind", "object_kind", "prompts", "objects")
    for key in required:
        if key not in raw:
            raise DataError(f"{source}: relation is missing '{key}'")
    name = raw["name"]
    where = f"{source}: relation {name}"  # "file:line: relation x: ..." (the line number stays right after the file)
    kind = raw["subject_kind"]
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise DataError(f"{where}: subject_kind {kind!r} is not a kind of thing: a word or a few (person, work, country, "
                        f"product, ...), starting with a letter, at most 60 characters")
    prompts = raw["prompts"]
    if not isinstance(prompts, dict) or "train" not in prompts or "test" not in prompts:
        raise DataError(f"{where}: 'prompts' needs 'train' and 'test' lists")
    test = prompts["test"]
    if isinstance(test, list):  # a user relation may give English test prompts only
        test = {"en": test}
    if not isinstance(test, dict) or "en" not in test:
        raise DataError(f"{where}: prompts.test needs English prompts ('en')")
    objects = raw["objects"]
    if not isinstance(objects, list) or not all(isinstance(o, str) and o.strip() == o and o for o in objects):
        raise DataError(f"{where}: 'objects' must be a list of non-empty strings without surrounding spaces")
    return Relation(
        id=str(raw["id"]),
        name=name,
        label=raw.get("label", name.replace("_", " ")),
        description=raw.get("description", ""),
        subject_kind=raw["subject_kind"],
        object_kind=raw["object_kind"],
        train_prompts=_check_prompts(prompts["train"], "subject", f"{where} prompts.train"),
        test_prompts={lang: _check_prompts(ps, "subject", f"{where} prompts.test.{lang}") for lang, ps in test.items()},
        unrelated_prompts=_check_prompts(prompts["unrelated"], "subject", f"{where} prompts.unrelated")
        if prompts.get("unrelated") else (),
        reverse_prompts=_check_prompts(prompts["reverse"], "object", f"{where} prompts.reverse")
        if prompts.get("reverse") else (),
        objects=tuple(objects),
    )


class PromptOverlapWarning(RoteWarning):
    """A test or unrelated prompt repeats a training prompt's words (rote.data.prompt_hygiene)."""


def warn_prompt_overlaps(relation: Relation, source: str) -> Relation:
    """Warn per overlapping prompt pair (rote.data.prompt_hygiene), naming `source`; returns `relation`.

    Attributed to this line, so the default warning filter shows each message once per process
    however often the file is loaded."""
    from rote.data.prompt_hygiene import overlaps
    for line in overlaps(relation):
        warnings.warn(f"{source}: prompt overlap, {line}; such a prompt does not measure an unseen prompt, "
                      f"reword the test or unrelated one", PromptOverlapWarning)
    return relation


def builtin_relation_names() -> list[str]:
    folder = resources.files("rote.data") / "relations"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_replaces(raw: dict, where: str) -> None:
    """A user relation named like a built-in one would silently take its place: that is an error
    unless the relation says so with `replaces: NAME` (and `replaces` names only that built-in)."""
    name, replaces = raw.get("name"), raw.get("replaces")
    builtin = builtin_relation_names()
    if replaces is not None and (replaces != name or name not in builtin):
        raise DataError(f"{where}: 'replaces: {quote(replaces)}' must repeat the relation's name, and that name must be "
                        f"a built-in relation ({', '.join(builtin)})")
    if name in builtin and replaces != name:
        raise DataError(f"{where}: relation {name!r} has the name of a built-in relation; rename it, or add "
                        f"'replaces: {name}' to replace the built-in one on purpose")


@cache
def load_relation(name: str) -> Relation:
    """A built-in relation by name (e.g. `place_of_birth`)."""
    names = builtin_relation_names()
    if name not in names:
        raise DataError(f"unknown relation {name!r}; built-in relations: {', '.join(names)}")
    path = resources.files("rote.data") / "relations" / f"{name}.yaml"
    return warn_prompt_overlaps(relation_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")),
                                                   f"relations/{name}.yaml"), f"relations/{name}.yaml")


# ---------------------------------------------------------------- facts


@dataclass(frozen=True)
class Fact:
    id: str  # language-independent, e.g. "P19:0007"
    subject: str
    subject_id: str  # shared across relations in the `shared` subject mode
    relation: str  # relation name
    object: str
    options: tuple[str, ...]  # multiple-choice options, gold included at a seeded position
    split: str  # "phase2" (seen with natural prompts) or "heldout"

    def __post_init__(self):
        if self.object not in self.options:
            raise DataError(f"fact {self.id}: gold object {self.object!r} is not among its options")


def write_facts(facts: list[Fact], path: str | Path) -> None:
    """JSONL, one fact per line; written to a temporary name and renamed."""
    write_jsonl(path, [asdict(fact) for fact in facts])


def read_facts(path: str | Path) -> list[Fact]:
    facts = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["options"] = tuple(row["options"])
                facts.append(Fact(**row))
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                raise DataError(f"{path}:{line_no}: not a fact record ({e})") from e
    return facts
