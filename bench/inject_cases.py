"""The injection benchmark's cases: `rote inject` inputs of different shapes, seeded, in a dev set
(for choosing settings) and a test set (evaluated once per candidate default, at the end).

    python bench/inject_cases.py              # (re)write bench/inject_cases/{dev,test}/ and test.sha256
    python bench/inject_cases.py --check      # regenerate in a temporary folder: the committed cases and
                                              # the test set's digest must be what the script writes

Each case is a folder: `facts.jsonl` (subject, relation, object), `relations.yaml` when it uses user
relations, `conflicts.jsonl` when it has facts that contradict what the model knows, and `case.json`
(its shape, seed, counts and how to inject it). The shapes (SHAPES): built-in relations only; a
user relation with only 5 training prompts; 1 to 3 facts per relation; 100+ facts; shared subjects
(each person in two relations); non-person subjects (products); conflicts with real capitals;
multi-token objects. The dev and test sets draw different user relations (bench/inject_cases/pool.yaml
splits them), different people, and different built-in relations where a shape allows, so that a
default chosen on dev is not fitted to a test relation.

`test.sha256` names every file of the test set with its sha256, and the digest of that list: it was
committed before any setting was tuned on dev (LOG.md says when), so a later change to the test set
shows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

import yaml

from rote.data.facts import load_relation, relation_from_dict
from rote.data.prompt_hygiene import overlaps
from rote.data.synth import fictional_subjects

HERE = Path(__file__).resolve().parent / "inject_cases"
POOL = HERE / "pool.yaml"
DIGEST = "test.sha256"
SEEDS = {"dev": 1000, "test": 2000}  # each case's seed: the set's plus the shape's index

# Per set, which relations each shape uses: built-in names, or user relations of pool.yaml by name.
SHAPES = {
    "builtin": {"about": "built-in relations only, separate subjects, 10 facts each",
                "dev": {"place_of_birth": 10, "occupation": 10, "educated_at": 10},
                "test": {"place_of_residence": 10, "mother": 10, "place_of_birth": 10}},
    "user_five": {"about": "a user relation with only 5 training prompts (20 facts), beside 10 birthplaces",
                  "dev": {"favourite_food": 20, "place_of_birth": 10},
                  "test": {"favourite_sport": 20, "place_of_birth": 10}, "train_prompts": 5},
    "few": {"about": "1 to 3 facts per relation, four relations",
            "dev": {"hobby": 1, "employer": 2, "occupation": 3, "place_of_birth": 2},
            "test": {"car_brand": 1, "favourite_drink": 3, "mother": 2, "place_of_residence": 2}},
    "large": {"about": "120 facts, 40 in each of three relations",
              "dev": {"place_of_birth": 40, "hobby": 40, "occupation": 40},
              "test": {"place_of_residence": 40, "favourite_sport": 40, "educated_at": 40}},
    "shared": {"about": "shared subjects: 20 people, each with a fact in both relations",
               "dev": {"place_of_birth": 20, "favourite_food": 20},
               "test": {"place_of_residence": 20, "car_brand": 20}, "shared": True},
    "products": {"about": "non-person subjects: 20 invented products, beside 10 people's birthplaces",
                 "dev": {"made_in": 20, "place_of_birth": 10},
                 "test": {"made_of": 20, "place_of_birth": 10}},
    "conflicts": {"about": "12 real countries given another country's capital (--conflicts), beside 18 birthplaces",
                  "dev": {"place_of_birth": 18}, "test": {"place_of_birth": 18}, "conflicts": 12},
    "multi_token": {"about": "objects of several words (companies, universities, full names)",
                    "dev": {"employer": 20, "mother": 10},
                    "test": {"educated_at": 20, "mother": 10}, "min_words": 2},
}


def pool() -> dict:
    return yaml.safe_load(POOL.read_text(encoding="utf-8"))


def user_relations(which: str) -> dict[str, dict]:
    """The pool's user relations of one set, name -> mapping, each checked as rote inject checks it
    (and for prompt overlaps, which would make an unseen prompt a seen one)."""
    out = {}
    for raw in pool()[which]:
        relation = relation_from_dict(raw, f"{POOL} ({which})")
        if overlaps(relation):
            raise SystemExit(f"{POOL}: relation {relation.name}: prompt overlap: {overlaps(relation)[0]}")
        out[raw["name"]] = raw
    return out


def _objects(name: str, users: dict[str, dict], min_words: int) -> list[str]:
    objects = users[name]["objects"] if name in users else list(load_relation(name).objects)
    return [o for o in objects if len(o.split()) >= min_words] or objects


def _products(n: int, rng: random.Random) -> list[str]:
    p, out = pool(), []
    while len(out) < n:
        name = f"{rng.choice(p['product_brands'])} {rng.choice('KMXZRT')}{rng.randint(2, 99)} {rng.choice(p['product_kinds'])}"
        if name not in out:
            out.append(name)
    return out


def make_case(which: str, shape: str) -> dict:
    """One case: {"facts": [...], "conflicts": [...], "relations": [user mappings], "case": {...}}."""
    spec = SHAPES[shape]
    seed = SEEDS[which] + list(SHAPES).index(shape)
    rng = random.Random(seed)
    users = user_relations(which)
    counts: dict[str, int] = spec[which]
    taken: set[str] = set()
    people = fictional_subjects("person", max(counts.values()) if spec.get("shared") else sum(counts.values()), rng, taken)
    facts, used = [], []
    for name, n in counts.items():
        kind = users[name]["subject_kind"] if name in users else load_relation(name).subject_kind
        if kind == "person":
            subjects = people[:n] if spec.get("shared") else [people.pop() for _ in range(n)]
        else:
            subjects = _products(n, rng)
        objects = _objects(name, users, spec.get("min_words", 1))
        facts += [{"subject": s, "relation": name, "object": rng.choice(objects)} for s in subjects]
        if name in users:
            raw = dict(users[name])
            if spec.get("train_prompts"):
                raw["prompts"] = {**raw["prompts"], "train": raw["prompts"]["train"][:spec["train_prompts"]]}
            used.append(raw)
    conflicts = []
    if spec.get("conflicts"):
        capitals = pool()["capitals"]
        countries = sorted(capitals)
        half = countries[:len(countries) // 2] if which == "dev" else countries[len(countries) // 2:]
        for country in rng.sample(half, spec["conflicts"]):
            wrong = rng.choice([c for k, c in capitals.items() if k != country])
            conflicts.append({"subject": country, "relation": "capital", "object": wrong})
    rng.shuffle(facts)
    case = {"shape": shape, "set": which, "seed": seed, "about": spec["about"], "facts": len(facts),
            "conflicts": len(conflicts), "relations": dict(counts) | ({"capital": len(conflicts)} if conflicts else {}),
            "user_relations": [r["name"] for r in used],
            "inject": "rote inject facts.jsonl" + (" --relations relations.yaml" if used else "")
                      + (" --conflicts conflicts.jsonl" if conflicts else "") + " --out OUT"}
    return {"facts": facts, "conflicts": conflicts, "relations": used, "case": case}


def write_case(folder: Path, made: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    (folder / "facts.jsonl").write_text(lines(made["facts"]), encoding="utf-8")
    if made["conflicts"]:
        (folder / "conflicts.jsonl").write_text(lines(made["conflicts"]), encoding="utf-8")
    if made["relations"]:
        (folder / "relations.yaml").write_text(yaml.safe_dump({"relations": made["relations"]}, sort_keys=False,
                                                              allow_unicode=True, width=120), encoding="utf-8")
    (folder / "case.json").write_text(json.dumps(made["case"], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def digest(folder: Path) -> str:
    """Every file under `folder` (sorted relative path and sha256), and the sha256 of that list."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file()]
    total = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return "\n".join(lines + [f"{total}  (all of the above)"]) + "\n"


def write_all(root: Path) -> None:
    for which in SEEDS:
        for shape in SHAPES:
            write_case(root / which / shape, make_case(which, shape))
    (root / DIGEST).write_text(digest(root / "test"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="regenerate elsewhere and compare with the committed cases")
    args = parser.parse_args(argv)
    if not args.check:
        write_all(HERE)
        print(f"wrote {len(SHAPES)} cases per set under {HERE}; test set digest: "
              f"{(HERE / DIGEST).read_text().splitlines()[-1].split()[0]}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_all(Path(tmp))
        differ = [p.relative_to(tmp).as_posix() for p in sorted(Path(tmp).rglob("*")) if p.is_file()
                  and (not (HERE / p.relative_to(tmp)).is_file() or (HERE / p.relative_to(tmp)).read_bytes() != p.read_bytes())]
    if differ:
        print(f"bench/inject_cases: {len(differ)} file(s) differ from what the script writes: {', '.join(differ[:5])}; "
              f"the test set must not change after tuning began (LOG.md)", file=sys.stderr)
        return 1
    print("bench/inject_cases: the committed cases and test.sha256 are what the script writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
