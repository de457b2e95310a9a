"""User facts and relations for `rote inject`, read with errors that name file, line and value.

Pure: no torch. Every check here runs before any model is loaded or any file is written.

Facts: JSONL (one object per line) or CSV/TSV (a header row naming the columns), with the fields
`subject`, `relation`, `object` and optionally `id` and `conflict` (true for a fact that
contradicts what the model already knows; its accuracy is reported separately).

Relations: a built-in name (rote/data/relations/*.yaml) or one defined in a user YAML file in the
same format (one relation mapping, or `relations: [...]`). A user relation may leave out `id`
(its name is used), `subject_kind` (person), `object_kind` (entity) and `objects`: the
multiple-choice options of a fact come from the relation's `objects` together with the objects
of the input facts of that relation.
"""
from __future__ import annotations

import csv
import io
import json
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


from rote.data.facts import DataError, Fact, Relation, builtin_relation_names, load_relation, relation_from_dict
from rote.data.relation_files import read_relations_file
from rote.errors import quote, read_utf8
from rote.text import INVISIBLE, identity, normalize

FIELDS = ("subject", "relation", "object")
OPTIONAL_FIELDS = ("id", "conflict")
MIN_OPTIONS = 5  # below this many candidate objects in a relation, multiple choice says little
# Checked before anything is tokenized, so a 5 MB subject fails at once (the token limits against the
# model's context come later, in rote.injection.preflight).
MAX_FIELD_CHARS = 1000  # subject, object, id
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


@dataclass(frozen=True)
class Row:
    subject: str
    relation: str
    object: str
    id: str | None
    conflict: bool
    where: str  # "file:line" (or "<facts>: item N"), for messages

    def key(self) -> dict:
        """The row's content without its location: what the injection's fingerprint covers."""
        return {"subject": self.subject, "relation": self.relation, "object": self.object, "id": self.id,
                "conflict": self.conflict}


# ---------------------------------------------------------------- facts


def _text(value, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {field} must be a string, got {quote(value)}")
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(f"{where}: {field} is {len(value):,} characters long (at most {MAX_FIELD_CHARS:,}): {quote(value)}")
    # Surrounding and repeated whitespace and invisible characters are not part of a name, and a
    # name is one sequence of characters however it was typed: NFC (macOS pastes "é" as "e" + a
    # mark, which the tokenizer, with no normalizer, would read as another word).
    text = unicodedata.normalize("NFC", " ".join(value.translate(INVISIBLE).split()))
    if not text:
        raise DataError(f"{where}: empty {field} ({quote(value)})")
    if "<rote:" in text:
        raise DataError(f"{where}: {field} {quote(value)} contains '<rote:', which is reserved for key tokens")
    return text


def _flag(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise DataError(f"{where}: conflict must be true or false, got {quote(value)}")


def row_from_dict(raw, where: str, conflict: bool = False) -> Row:
    """Validate one input row (a dict from JSON or CSV)."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected an object with {', '.join(FIELDS)}, got {quote(raw)}")
    unknown = sorted(set(raw) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise DataError(f"{where}: unknown field {quote(unknown[0])} in {quote(raw)} (fields: {', '.join(FIELDS + OPTIONAL_FIELDS)})")
    missing = [f for f in FIELDS if f not in raw]
    if missing:
        raise DataError(f"{where}: missing field {quote(missing[0])} in {quote(raw)}")
    ident = raw.get("id")
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    if ident is not None and not isinstance(ident, str):
        raise DataError(f"{where}: id must be a string, got {quote(ident)}")
    if ident is not None and len(ident) > MAX_FIELD_CHARS:
        raise DataError(f"{where}: id is {len(ident):,} characters long (at most {MAX_FIELD_CHARS:,}): {quote(ident)}")
    ident = (ident.strip() or None) if ident is not None else None
    return Row(
        subject=_text(raw["subject"], "subject", where),
        relation=_text(raw["relation"], "relation", where),
        object=_text(raw["object"], "object", where),
        id=ident,
        conflict=conflict or _flag(raw.get("conflict", False), where),
        where=where,
    )


def _read_jsonl(path: Path, conflict: bool) -> list[Row]:
    rows = []
    for line_no, line in enumerate(read_utf8(path, DataError).split("\n"), 1):  # not splitlines: \u2028 is text
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not a JSON object ({e.msg}): {quote(line.strip())}") from None
        rows.append(row_from_dict(raw, where, conflict))
    return rows


def _read_csv(path: Path, conflict: bool) -> list[Row]:
    rows = []
    with io.StringIO(read_utf8(path, DataError), newline="") as f:
        reader = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        header = None
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not any(x.strip() for x in fields):
                continue
            if header is None:
                header = [h.strip().lower() for h in fields]
                if not set(FIELDS) <= set(header):
                    raise DataError(f"{where}: expected a header row naming the columns {', '.join(FIELDS)} "
                                    f"(optional: {', '.join(OPTIONAL_FIELDS)}), got {quote(fields)}")
                bad = [h for h in header if h not in FIELDS + OPTIONAL_FIELDS]
                if bad or len(set(header)) != len(header):
                    raise DataError(f"{where}: header column {quote((bad or header)[0])} is unknown or repeated in {quote(fields)}")
                continue
            if len(fields) != len(header):
                raise DataError(f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(fields)}: {quote(fields)}")
            rows.append(row_from_dict(dict(zip(header, fields)), where, conflict))
    return rows


def read_rows(source, conflict: bool = False) -> list[Row]:
    """Rows from a JSONL/CSV/TSV file, or from a list of dicts (the Python API)."""
    if isinstance(source, (list, tuple)):
        return [row_from_dict(raw, f"<facts>: item {i}", conflict) for i, raw in enumerate(source, 1)]
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such facts file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_jsonl(path, conflict)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(path, conflict)
    else:
        raise DataError(f"{path}: unknown facts format {quote(suffix)} (use .jsonl or .csv)")
    if not rows:
        raise DataError(f"{path}: no facts in the file")
    return rows


# ---------------------------------------------------------------- the whole input


@dataclass(frozen=True)
class Input:
    rows: list[Row]  # validated, exact duplicates dropped, in input order
    relations: dict[str, Relation]  # the relations the rows use, in order of first use
    user_relations: dict[str, dict]  # of those, the ones from the user file: their mappings
    duplicates: int  # rows dropped because they repeated an earlier row exactly
    sources: dict  # where the input came from, for the card


def load_input(facts, relations_file=None, conflicts=None) -> Input:
    """Read and check everything `rote inject` is given; raises DataError naming file, line and value."""
    user = read_relations_file(relations_file) if relations_file else {}
    rows = read_rows(facts) + (read_rows(conflicts, conflict=True) if conflicts else [])
    builtin = builtin_relation_names()
    relations: dict[str, Relation] = {}
    kept: list[Row] = []
    first: dict[tuple[str, str], Row] = {}
    ids: dict[str, Row] = {}
    duplicates = 0
    for row in rows:
        if row.relation not in relations:
            if row.relation in user:
                relations[row.relation] = relation_from_dict(user[row.relation], str(relations_file))
            elif row.relation in builtin:
                relations[row.relation] = load_relation(row.relation)
            else:
                known = f"built-in: {', '.join(builtin)}" + (f"; in {relations_file}: {', '.join(user)}" if user else "")
                raise DataError(f"{row.where}: unknown relation {quote(row.relation)} ({known})")
        key = (identity(row.subject), row.relation)
        if key in first:
            before = first[key]
            if identity(before.object) != identity(row.object):
                raise DataError(f"{row.where}: {quote(row.subject)} {row.relation} is given twice with different objects: "
                                f"{quote(row.object)} here, {quote(before.object)} at {before.where}")
            if (row.id is not None and before.id != row.id) or before.conflict != row.conflict:
                raise DataError(f"{row.where}: repeats the fact at {before.where} with another id or conflict flag")
            duplicates += 1
            continue
        if row.id is not None:
            if row.id in ids:
                raise DataError(f"{row.where}: id {quote(row.id)} is already used at {ids[row.id].where}")
            ids[row.id] = row
        first[key] = row
        kept.append(row)
    by_id = Counter(r.id for r in relations.values())
    clash = [i for i, n in by_id.items() if n > 1]
    if clash:
        names = [r.name for r in relations.values() if r.id == clash[0]]
        raise DataError(f"relations {names} share the id {quote(clash[0])}, so they would share one key token; "
                        f"give the user relation another id in {relations_file}")
    sources = {"facts": str(facts) if not isinstance(facts, (list, tuple)) else "<list>",
               "relations": str(relations_file) if relations_file else None,
               "conflicts": str(conflicts) if conflicts else None}
    return Input(kept, relations, {n: user[n] for n in relations if n in user}, duplicates, sources)


# ---------------------------------------------------------------- facts with splits and options


def phase2_count(n: int, fraction: float) -> int:
    """Facts of a relation seen with natural prompts in phase 2: about `fraction`, at least 1."""
    return max(1, min(n, int(fraction * n + 0.5)))


def option_pools(inp: Input) -> dict[str, list[str]]:
    """Per relation, the candidate objects for multiple choice: its `objects`, then the objects
    of the input facts of that relation (so a small or missing pool is filled from the input);
    one spelling of each name the match rule cannot tell apart ("paris" and "Paris" are one option)."""
    pools: dict[str, list[str]] = {}
    for name, rel in inp.relations.items():
        spellings = {}
        for obj in list(rel.objects) + [r.object for r in inp.rows if r.relation == name]:
            spellings.setdefault(normalize(obj), obj)
        pools[name] = list(spellings.values())
    return pools


def build_facts(inp: Input, n_options: int, phase2_fraction: float, seed: int = 0) -> tuple[list[Fact], dict]:
    """Fact records (ids, shared subject ids, seeded splits and options) and a summary per relation.

    Phase 2 takes whole people, so that a held-out fact's person is never seen with natural prompts
    nor asked contrast questions: "held out" means what the card says. Per relation it aims at
    `phase2_count` facts. The relations with the fewest people come first; each takes people in a
    seeded order (those without a conflicting fact first) until it has its count, preferring a
    person who takes no relation past its count, then one who leaves every relation of two or more
    facts a held-out fact, then anyone. Each fact gets min(n_options, pool size) options, the gold
    at a seeded position."""
    if not 0 < phase2_fraction <= 1:
        raise DataError(f"the phase-2 fraction must lie in (0, 1], got {phase2_fraction}")
    if n_options < 1:
        raise DataError(f"data.n_options must be >= 1, got {n_options}")
    rng = random.Random(seed)
    pools = option_pools(inp)
    subject_ids: dict[str, str] = {}
    people: dict[str, list[int]] = {}  # subject id -> the person's rows
    for i, r in enumerate(inp.rows):
        sid = subject_ids.setdefault(identity(r.subject), f"subject:{len(subject_ids):04d}")
        people.setdefault(sid, []).append(i)
    count = Counter(r.relation for r in inp.rows)
    want = {name: phase2_count(count[name], phase2_fraction) for name in inp.relations}
    order = list(people)
    rng.shuffle(order)
    order.sort(key=lambda sid: any(inp.rows[i].conflict for i in people[sid]))  # stable: conflict-free first
    has = {sid: Counter(inp.rows[i].relation for i in people[sid]) for sid in order}
    have: Counter = Counter()
    taken: set[str] = set()

    def within_counts(sid: str) -> bool:
        return all(have[n] + c <= want[n] for n, c in has[sid].items())

    def keeps_one_held_out(sid: str) -> bool:
        return all(count[n] - have[n] - c >= 1 for n, c in has[sid].items() if count[n] >= 2)

    for name in sorted(inp.relations, key=lambda n: sum(1 for sid in order if n in has[sid])):
        for acceptable in (within_counts, keeps_one_held_out, lambda sid: True):
            for sid in order:
                if have[name] >= want[name]:
                    break
                if sid not in taken and name in has[sid] and acceptable(sid):
                    taken.add(sid)
                    have.update(has[sid])
    phase2 = {i for sid in taken for i in people[sid]}
    info: dict[str, dict] = {}
    for name, rel in inp.relations.items():
        info[name] = {"id": rel.id, "key_token": rel.key_token, "facts": count[name], "phase2": have[name],
                      "heldout": count[name] - have[name],
                      "conflict": sum(1 for r in inp.rows if r.relation == name and r.conflict),
                      "options": min(n_options, len(pools[name])), "pool": len(pools[name]),
                      "source": "user" if name in inp.user_relations else "built-in"}
    counters: Counter = Counter()
    facts = []
    for i, r in enumerate(inp.rows):
        rel = inp.relations[r.relation]
        counters[r.relation] += 1
        ident = r.id or f"{rel.id}:{counters[r.relation] - 1:04d}"
        others = [o for o in pools[r.relation] if normalize(o) != normalize(r.object)]  # never the answer in another case
        options = rng.sample(others, info[r.relation]["options"] - 1) + [r.object]
        rng.shuffle(options)
        facts.append(Fact(id=ident, subject=r.subject, subject_id=subject_ids[identity(r.subject)], relation=r.relation,
                          object=r.object, options=tuple(options), split="phase2" if i in phase2 else "heldout"))
    seen: dict[str, int] = {}
    for i, f in enumerate(facts):  # a generated id may collide with one given in the input
        if f.id in seen:
            raise DataError(f"{inp.rows[i].where}: fact id {quote(f.id)} is also the id of the fact at "
                            f"{inp.rows[seen[f.id]].where}; give ids to all facts or to none")
        seen[f.id] = i
    return facts, info
