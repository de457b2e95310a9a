"""The one reader of relation files: YAML checked node by node, so every error names file and line.

Built-in relations (`rote/data/relations/*.yaml`) and user relations (`data.relations_file` of a run,
`--relations` of `rote inject`) share one format; a user relation may leave out `id` (its name is
used), `subject_kind` (person), `object_kind` (entity) and `objects`. Pure: no torch.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from rote.data.facts import DataError, Relation, check_replaces, load_relation, relation_from_dict, warn_prompt_overlaps
from rote.errors import quote, read_utf8, yaml_error
from rote.strict_yaml import StrictLoader

MAX_PROMPT_CHARS = 1000  # a relation's prompt template
_PLACEHOLDER = re.compile(r"\{(\w*)\}")
_RELATION_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _yaml_root(path: Path):
    text = read_utf8(path, DataError)
    try:
        loader = yaml.SafeLoader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise yaml_error(path, text, e, DataError) from None


def _child(node, key: str):
    """The value node under `key` of a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _line(node) -> int:
    return node.start_mark.line + 1


def _key_line(node, key: str) -> int:
    """Line of `key:` inside a mapping node (the node's own line when the key is absent)."""
    for k, _ in node.value if isinstance(node, yaml.MappingNode) else []:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return _line(k)
    return _line(node)


def _check_prompt_nodes(node, placeholder: str, path: Path, name: str, field: str, required: bool) -> None:
    where = f"{path}:{_line(node)}: relation {name}"
    empty = (isinstance(node, yaml.SequenceNode) and not node.value) or \
        (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"))
    if empty and not required:  # an optional list left empty or null: the relation simply has none
        return
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise DataError(f"{where}: prompts.{field} must be a non-empty list of prompts")
    for item in node.value:
        value = item.value if isinstance(item, yaml.ScalarNode) else None
        if value is not None and len(value) > MAX_PROMPT_CHARS:
            raise DataError(f"{path}:{_line(item)}: relation {name}: a prompt in prompts.{field} is {len(value):,} "
                            f"characters long (at most {MAX_PROMPT_CHARS:,}): {quote(value)}")
        if value is None or _PLACEHOLDER.findall(value) != [placeholder] or value != value.strip():
            raise DataError(f"{path}:{_line(item)}: relation {name}: prompt {quote(value)} in prompts.{field} must contain "
                            f"{{{placeholder}}} exactly once, no other placeholder and no surrounding spaces")


def _relation_from_node(node, path: Path, number: int) -> dict:
    """A user relation's mapping with defaults filled in, checked with line numbers."""
    if not isinstance(node, yaml.MappingNode):
        raise DataError(f"{path}:{_line(node)}: relation #{number} must be a mapping")
    try:
        raw = StrictLoader("").construct_document(node)
    except yaml.YAMLError as e:  # a tag the safe loader refuses (!!python/...), a bad !!binary
        raise yaml_error(path, "", e, DataError) from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}:{_line(node)}: relation #{number} must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{path}:{_line(node)}: relation #{number} needs a 'name', got {quote(name)}")
    prompts = _child(node, "prompts")
    if not isinstance(prompts, yaml.MappingNode):
        raise DataError(f"{path}:{_line(prompts or node)}: relation {name}: missing 'prompts' "
                        f"(a mapping with 'train' and 'test' lists)")
    for field in ("train", "test"):
        if _child(prompts, field) is None:
            raise DataError(f"{path}:{_key_line(node, 'prompts')}: relation {name}: missing prompts.{field}")
    _check_prompt_nodes(_child(prompts, "train"), "subject", path, name, "train", True)
    test = _child(prompts, "test")
    if isinstance(test, yaml.MappingNode):
        if _child(test, "en") is None:
            raise DataError(f"{path}:{_line(test)}: relation {name}: prompts.test needs English prompts ('en')")
        for k, v in test.value:
            _check_prompt_nodes(v, "subject", path, name, f"test.{k.value}", True)
    else:
        _check_prompt_nodes(test, "subject", path, name, "test", True)
    for field, placeholder in (("unrelated", "subject"), ("reverse", "object")):
        if _child(prompts, field) is not None:
            _check_prompt_nodes(_child(prompts, field), placeholder, path, name, field, False)
    ident = str(raw.get("id", name))
    if not _RELATION_ID.match(ident):
        raise DataError(f"{path}:{_line(_child(node, 'id') or node)}: relation {name}: id {quote(ident)} may only use "
                        f"letters, digits, '_', '.' and '-' (it names the key token <rote:ID>)")
    objects = raw.get("objects") or []
    raw = {**raw, "id": ident, "subject_kind": raw.get("subject_kind", "person"),
           "object_kind": raw.get("object_kind", "entity"), "objects": objects}
    if isinstance(raw["prompts"].get("test"), list):
        raw["prompts"] = {**raw["prompts"], "test": {"en": raw["prompts"]["test"]}}
    for field in ("unrelated", "reverse"):
        if field in raw["prompts"] and not raw["prompts"][field]:
            raw["prompts"] = {k: v for k, v in raw["prompts"].items() if k != field}
    where = f"{path}:{_line(node)}"
    warn_prompt_overlaps(relation_from_dict(raw, where), where)  # the remaining checks, now with a line
    return raw


def read_relations_file(path) -> dict[str, dict]:
    """name -> the relation's mapping (defaults filled in), from a user YAML file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such relations file")
    root = _yaml_root(path)
    items = _child(root, "relations") if _child(root, "relations") is not None else root
    nodes = items.value if isinstance(items, yaml.SequenceNode) else [items] if isinstance(items, yaml.MappingNode) else None
    if not nodes:
        raise DataError(f"{path}:1: expected a relation mapping or 'relations: [...]'")
    out: dict[str, dict] = {}
    for number, node in enumerate(nodes, 1):
        raw = _relation_from_node(node, path, number)
        check_replaces(raw, f"{path}:{_line(node)}")
        if raw["name"] in out:
            raise DataError(f"{path}:{_line(node)}: relation {quote(raw['name'])} is defined twice")
        out[raw["name"]] = raw
    return out


def load_relations_file(path) -> list[Relation]:
    """The relations of a user file, checked (read_relations_file) and built."""
    return [relation_from_dict(raw, f"{path} relation {name}") for name, raw in read_relations_file(path).items()]


def resolve_relations(names, relations_file: str | None = None) -> list[Relation]:
    """Relations by name: user-file relations first, then the built-in ones."""
    user = {r.name: r for r in load_relations_file(relations_file)} if relations_file else {}
    return [user[n] if n in user else load_relation(n) for n in names]
