"""Pure aggregation of evaluation records (dicts from `evaluate.py`). No torch.

A summary row is one group of records: split x prompt set x language x relation, plus the
roll-up over relations (relation = "all"), each with its count. For unrelated prompts,
"accuracy" is the rate at which the model answers with the memorized object: it should stay
near 0.
"""
from __future__ import annotations

from collections import defaultdict

GROUP_KEYS = ("split", "prompt_set", "language", "relation")
METRICS = ("prefix", "contains", "mc", "prob", "confusion")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _row(records: list[dict]) -> dict:
    row = {
        "n": len(records),
        "prefix": _mean([float(r["hit_prefix"]) for r in records]),
        "contains": _mean([float(r["hit_contains"]) for r in records]),
        "mc": _mean([float(r["mc_hit"]) for r in records if "mc_hit" in r]),
        "prob": _mean([r["gold_prob_norm"] for r in records if "gold_prob_norm" in r]),
        # Shared-subject mode: the answer is the subject's object in another relation.
        "confusion": _mean([float(bool(r["other_relation_hit"])) for r in records if "other_relation_hit" in r]),
    }
    return row


def aggregate(records: list[dict]) -> list[dict]:
    """Summary rows, sorted; each row has the GROUP_KEYS, `n` and the METRICS (None when absent)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        key = tuple(r[k] for k in GROUP_KEYS)
        groups[key].append(r)
        groups[key[:-1] + ("all",)].append(r)
        groups[("all",) + key[1:-1] + ("all",)].append(r)  # both splits together
    rows = [dict(zip(GROUP_KEYS, key)) | _row(recs) for key, recs in groups.items()]
    order = {"key": 0, "train": 1, "test": 2, "unrelated": 3, "languages": 4, "reverse": 5, "two_hop": 6, "repurposed": 7}
    rows.sort(key=lambda r: (r["split"], order.get(r["prompt_set"], 9), r["language"], r["relation"] != "all", r["relation"]))
    return rows


def pick(rows: list[dict], **where) -> dict | None:
    """The one summary row matching `where` (e.g. split="heldout", prompt_set="test", relation="all")."""
    found = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
    if len(found) > 1:
        raise ValueError(f"{len(found)} rows match {where}; add keys to select one")
    return found[0] if found else None


def headline(stages: dict[str, list[dict]], metric: str = "prefix") -> list[dict]:
    """One row per split x prompt set x language (all relations), one column per stage."""
    table: dict[tuple, dict] = {}
    for stage, rows in stages.items():
        for r in rows:
            if r["relation"] != "all" or r["split"] == "all":
                continue
            key = (r["split"], r["prompt_set"], r["language"])
            entry = table.setdefault(key, {"split": key[0], "prompt_set": key[1], "language": key[2], "n": r["n"]})
            entry[stage] = r[metric]
    return list(table.values())
