"""Pure aggregation of evaluation records (dicts from rote.evaluation.scoring). No torch.

A summary row is one group of records: split x prompt set x language x relation x prompt form,
each with its count. Rows with relation = "all" roll up the relations, rows with form = "all"
roll up the prompt forms (statement / question / qa, broken out for relation = "all" only), and
split = "all" both splits.

What the columns mean, per record:
- `prefix`, `contains`: the answer names the fact's own object (prefix rule / contains rule).
  For unrelated prompts this is not accuracy but a failure of the control.
- `first`: under a chat template, the first-named rule (the first known object the answer names is
  the gold; the key-token prompt, asked raw, by the prefix rule); None for a raw run.
- `other_object`: the answer names the subject's memorized object of *another* relation
  (shared subjects: the person's other city).
- `any_object`: either of the two: the answer names some memorized object of the subject. For
  unrelated prompts this is the control's headline: it should stay near 0.
- `empty`: the answer is empty (an immediate end of sequence or newline), common for
  question-form prompts on small instruct models.
"""
from __future__ import annotations

from collections import defaultdict

from rote.evaluation.fluency import fluency_summary
from rote.names import PROMPT_FORMS, PROMPT_SETS

GROUP_KEYS = ("split", "prompt_set", "language", "relation", "form")
METRICS = ("prefix", "contains", "first", "mc", "prob", "other_object", "any_object", "empty")
# The metric a run's headline counts by: the prefix rule for raw prompts, the first-named rule when its
# prompts were asked under a chat template (the stage summary's `rule`).
RULE_METRIC = {"prefix": "prefix", "first_named": "first"}


HEADLINE = "headline"  # a study metric: each run's own rule (first-named under a chat template, else prefix)


def metric_value(row: dict, metric: str) -> float | None:
    """A summary row's `metric`; `headline` is the row's first-named value where its run asked under a
    chat template, else its prefix value, so that one study column compares raw and chat runs by the
    rule each is scored by."""
    if metric == HEADLINE:
        return row["prefix"] if row.get("first") is None else row["first"]
    return row.get(metric)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _row(records: list[dict]) -> dict:
    return {
        "n": len(records),
        "prefix": _mean([float(r["hit_prefix"]) for r in records]),
        "contains": _mean([float(r["hit_contains"]) for r in records]),
        "first": _mean([float(r["hit_first"]) for r in records if "hit_first" in r]),
        "mc": _mean([float(r["mc_hit"]) for r in records if "mc_hit" in r]),
        "prob": _mean([r["gold_prob_norm"] for r in records if "gold_prob_norm" in r]),
        "other_object": _mean([float(bool(r["other_relation_hit"])) for r in records if "other_relation_hit" in r]),
        "any_object": _mean([float(r["any_object_hit"]) for r in records if "any_object_hit" in r]),
        "empty": _mean([float(r["empty"]) for r in records if "empty" in r]),
    }


def aggregate(records: list[dict]) -> list[dict]:
    """Summary rows, sorted; each row has the GROUP_KEYS, `n` and the METRICS (None when absent)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        split, prompt_set, language, relation = (r[k] for k in GROUP_KEYS[:4])
        form = r.get("prompt_form", "key")
        for s in (split, "all"):  # each split, and both together
            groups[(s, prompt_set, language, relation, "all")].append(r)
            groups[(s, prompt_set, language, "all", "all")].append(r)
            if form in PROMPT_FORMS:
                groups[(s, prompt_set, language, "all", form)].append(r)
    rows = [dict(zip(GROUP_KEYS, key)) | _row(recs) for key, recs in groups.items()]
    order = {s: i for i, s in enumerate(PROMPT_SETS)}
    forms = {"all": 0, **{f: i + 1 for i, f in enumerate(PROMPT_FORMS)}}
    rows.sort(key=lambda r: (r["split"], order.get(r["prompt_set"], 9), r["language"], r["relation"] != "all",
                             r["relation"], forms[r["form"]]))
    return rows


def pick(rows: list[dict], **where) -> dict | None:
    """The one summary row matching `where` (e.g. split="heldout", prompt_set="test", relation="all");
    all prompt forms together unless `form` is given."""
    where.setdefault("form", "all")
    found = [r for r in rows if all(r.get(k, "all") == v for k, v in where.items())]
    if len(found) > 1:
        raise ValueError(f"{len(found)} rows match {where}; add keys to select one")
    return found[0] if found else None


def headline(stages: dict[str, list[dict]], metric: str = "prefix") -> list[dict]:
    """One row per split x prompt set x language (all relations), one column per stage."""
    table: dict[tuple, dict] = {}
    for stage, rows in stages.items():
        for r in rows:
            if r["relation"] != "all" or r["split"] == "all" or r.get("form", "all") != "all":
                continue
            key = (r["split"], r["prompt_set"], r["language"])
            entry = table.setdefault(key, {"split": key[0], "prompt_set": key[1], "language": key[2], "n": r["n"]})
            entry[stage] = r.get(metric)
    return list(table.values())


def locality_summary(base: list[dict], after: list[dict]) -> dict:
    """Compare probe records of a stage with the base model's (matched by prompt): of the probes
    the base model answered correctly, the share still correct; the share of all probes whose
    generation is unchanged; the share of answer tokens whose teacher-forced argmax equals the
    base model's, averaged over all probes (token_agreement, EasyEdit's locality); what was lost."""
    now = {r["prompt"]: r for r in after}
    known = [r for r in base if r["correct"]]
    kept = [r for r in known if now.get(r["prompt"], {}).get("correct")]
    same = [r for r in base if r["prompt"] in now and now[r["prompt"]]["generation"] == r["generation"]]
    agreement = [_agreement(r["argmax"], now[r["prompt"]]["argmax"]) for r in base
                 if r["prompt"] in now and "argmax" in r and "argmax" in now[r["prompt"]]]
    return {
        "probes": len(base),
        "base_correct": len(known),
        "still_correct": len(kept) / len(known) if known else None,
        "unchanged": len(same) / len(base) if base else None,
        "token_agreement": _mean(agreement),
        "lost": [{"prompt": r["prompt"], "answer": r["answer"], "now": now.get(r["prompt"], {}).get("generation")}
                 for r in known if r not in kept],
    }


def _agreement(base: list[int], now: list[int]) -> float:
    """The share of positions where two argmax sequences agree (the same answer tokens, so equal lengths)."""
    return sum(a == b for a, b in zip(base, now)) / len(base) if base else 1.0


def damage_summary(base: list[dict], after: list[dict], base_perplexity: float | None, perplexity: float,
                   base_fluency: list[dict] | None = None, fluency: list[dict] | None = None) -> dict:
    """An eval stage's `damage` block: locality_summary against the base model's probe records,
    the stage's perplexity and its ratio to the base model's (None without a base measurement), and
    when the stage measured fluency (`fluency`, its fluency.jsonl records) the fluency measures against
    eval/base's (rote.evaluation.fluency.fluency_summary)."""
    locality = locality_summary(base, after)
    lost = locality.pop("lost")
    ratio = round(perplexity / base_perplexity, 4) if base_perplexity else None
    fluent = fluency_summary(base_fluency or [], fluency) if fluency is not None else {}
    return {**locality, "perplexity": perplexity, "perplexity_ratio": ratio, **fluent, "lost": lost}
