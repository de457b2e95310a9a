"""The card of a `rote inject` output: what was injected and how well, from the run's files only.

Pure (no torch): every number comes from files `rote inject` wrote into `<out>/run/`, so a card
can be rebuilt from a copied folder. Accuracies are generation accuracy (greedy decoding, the
answer starts with the object) taken from the eval summary rows (`rote.evaluation.metrics.pick`):

- efficacy: the training prompt(s) that phase 2 used; generalization: the relation's unseen test
  prompts, in English and in each other language the relation has; both for the phase-2 facts
  and for the held-out facts (memorized only with the key token);
- conflict facts (contradicting what the model knew): the same two numbers, on those facts only;
- damage, from each eval stage's `damage` block (every run measures it, rote.eval_stage.run_eval):
  locality (the share of the probes the base model answered correctly still answered correctly,
  the share unchanged), token agreement with the base model, perplexity on held-out paragraphs
  and its ratio to the base model's, and fluency (rote.evaluation.fluency: answers naming the gold
  twice, repeating, ending cleanly; n-gram entropy against the base model's); also after phase 1 alone, to tell which phase costs it, and
  for the baseline (its own run's eval/phase1). A run without the block shows "not measured";
- the baseline: plain fine-tuning on all facts with the same training prompts, at the same number
  of supervised tokens (a run of arm plain_finetune in `run/baseline/`).
"""
from __future__ import annotations

from pathlib import Path

from rote.evaluation.metrics import RULE_METRIC, aggregate, pick
from rote.fileio import read_json, read_jsonl, read_summary
from rote.names import CONFIG_FILE, LANGUAGES, SUMMARY_SPLITS
from rote.report.headline import read_run_config
from rote.report.html import fmt

NOT_MEASURED = "not measured"  # a run written before every run measured damage



def value(rows: list[dict], split: str, prompt_set: str, language: str = "en", metric: str = "prefix",
          relation: str = "all") -> float | None:
    row = pick(rows, split=split, prompt_set=prompt_set, language=language, relation=relation)
    return None if row is None else row.get(metric)


def _combined(rows: list[dict], prompt_set: str, relation: str, metric: str = "prefix") -> float | None:
    """Both splits of one relation together (the summary rows only roll splits up for 'all')."""
    parts = [r for r in rows if r["prompt_set"] == prompt_set and r["language"] == "en" and r["relation"] == relation
             and r["split"] in ("phase2", "heldout") and r.get(metric) is not None]
    n = sum(r["n"] for r in parts)
    return sum(r[metric] * r["n"] for r in parts) / n if n else None


def stage_metrics(rows: list[dict], metric: str = "prefix") -> dict:
    """The card's accuracies from one stage's eval summary rows, by `metric` (the stage's rule: prefix,
    or first-named under a chat template)."""
    present = {r["language"] for r in rows if r["prompt_set"] == "languages"}
    languages = [lang for lang in LANGUAGES if lang in present] + sorted(present - set(LANGUAGES))
    relations = sorted({r["relation"] for r in rows if r["relation"] != "all"})
    out = {
        "efficacy": {s: value(rows, s, "train", metric=metric) for s in SUMMARY_SPLITS},
        "generalization": {s: value(rows, s, "test", metric=metric) for s in SUMMARY_SPLITS},
        "languages": {lang: {s: value(rows, s, "languages", lang, metric) for s in SUMMARY_SPLITS} for lang in languages},
        "key": {s: value(rows, s, "key", metric=metric) for s in SUMMARY_SPLITS},
        # The control's headline: unrelated prompts answered with any memorized object of the
        # subject, then the split into the fact's own object and another relation's.
        "unrelated": {s: value(rows, s, "unrelated", metric="any_object") for s in SUMMARY_SPLITS},
        "unrelated_own": {s: value(rows, s, "unrelated", metric=metric) for s in SUMMARY_SPLITS},
        "unrelated_other": {s: value(rows, s, "unrelated", metric="other_object") for s in SUMMARY_SPLITS},
        "mc_efficacy": {s: value(rows, s, "train", metric="mc") for s in SUMMARY_SPLITS},
        "mc_generalization": {s: value(rows, s, "test", metric="mc") for s in SUMMARY_SPLITS},
        "other_object": {s: value(rows, s, "test", metric="other_object") for s in SUMMARY_SPLITS},
        "empty": {s: value(rows, s, "test", metric="empty") for s in SUMMARY_SPLITS},
        "test_records": {s: (pick(rows, split=s, prompt_set="test", language="en", relation="all") or {}).get("n") for s in SUMMARY_SPLITS},
        "by_relation": {rel: {"efficacy": _combined(rows, "train", rel, metric),
                              "generalization": _combined(rows, "test", rel, metric)}
                        for rel in relations},
    }
    return out


def conflict_metrics(records: list[dict], conflict_ids: set[str], metric: str = "prefix") -> dict | None:
    """Efficacy and generalization on the conflicting facts only (all splits together)."""
    mine = [r for r in records if r["fact_id"] in conflict_ids]
    if not mine:
        return None
    rows = aggregate(mine)
    return {"facts": len({r["fact_id"] for r in mine}), "efficacy": value(rows, "all", "train", metric=metric),
            "generalization": value(rows, "all", "test", metric=metric)}


def build_card(run_dir: str | Path) -> dict:
    """The card's content, from the files in the run directory (missing parts are None)."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "inject.json") or {}
    splits = read_json(run_dir / "splits.json") or {}
    conflicts = set(splits.get("conflict", []))
    keys = (read_json(run_dir / "key_tokens.json") or {}).get("tokens", {})
    relations = {name: {**info, "key_token_id": keys.get(info["key_token"])}
                 for name, info in meta.get("relations", {}).items()}
    base = (read_json(run_dir / "eval/base/summary.json") or {}).get("damage")

    def stage(folder: str) -> dict | None:
        summary = read_json(run_dir / folder / "summary.json")
        if summary is None or "rows" not in summary:
            return None
        metric = RULE_METRIC[summary.get("rule", "prefix")]
        out = stage_metrics(summary["rows"], metric)
        out["rule"] = summary.get("rule", "prefix")
        out["rendering"] = (summary.get("rendering") or {}).get("chat_template", "off")
        out["conflict"] = conflict_metrics(read_jsonl(run_dir / folder / "predictions.jsonl"), conflicts, metric)
        out["damage"] = summary.get("damage")  # None: a run written before every run measured it
        return out

    # Wall-clock seconds live in timing.json (summaries hold only what a resumed run reproduces).
    # The baseline is a run of its own in run/baseline (arm plain_finetune: it trains in its phase 1).
    phase1, phase2, baseline = (read_summary(run_dir / p) for p in ("phase1", "phase2", "baseline/phase1"))
    config = read_run_config(run_dir).get("config") or {} if (run_dir / CONFIG_FILE).is_file() else {}
    history = (phase1 or {}).get("key_accuracy_by_epoch") or []
    training = {
        "phase1": phase1 and {"epochs": phase1["epochs"], "memorized_at_epoch": phase1.get("memorized_at_epoch"),
                              "key_accuracy": history[-1]["key_accuracy"] if history else None,
                              "steps": phase1["steps"], "examples": phase1.get("examples"),
                              "supervised_tokens": phase1["supervised_tokens"], "seconds": phase1["seconds"]},
        "phase2": phase2 and {k: phase2.get(k) for k in ("epochs", "steps", "examples", "supervised_tokens", "seconds",
                                                         "best_epoch")},
        # The levers against damage each phase trained with (rote.levers): anchors per kind, and
        # where the update went (config phaseN.update, when the phase's summary says it restricted
        # the update: rote.runner writes trainable_parameters then; absent: every weight).
        "levers": {name: _levers(s, (config.get(name) or {}).get("update"))
                   for name, s in (("phase1", phase1), ("phase2", phase2)) if s},
        "baseline": baseline and {k: baseline.get(k) for k in ("steps", "examples", "distinct_examples",
                                                               "equivalent_epochs", "supervised_tokens", "budget",
                                                               "max_batch_tokens", "seconds")},
    }
    return {
        "rote_version": meta.get("rote_version"),
        "model": {"base": meta.get("model"), "folder": meta.get("out")},
        "input": {**meta.get("sources", {}), "facts": meta.get("facts"), "duplicates_dropped": meta.get("duplicates", 0)},
        "relations": relations,
        "settings": meta.get("settings", {}),
        "training": training,
        "results": {
            "rote": stage("eval/phase2"),
            "phase1_only": stage("eval/phase1"),
            "baseline": stage("baseline/eval/phase1"),
            "base": base and {"perplexity": base["perplexity"], "locality_correct": base["base_correct"],
                              "locality_probes": base["probes"], "damage": base},
        },
        "notes": meta.get("notes", []),
        "warnings": meta.get("warnings", []),
    }


# The verdict's margins: a method learns the facts better when its efficacy is this much higher, at
# comparable damage when its locality is at most this much lower and its perplexity ratio this much higher.
LEARNED_BETTER = 0.05
LOCALITY_MARGIN = 0.05
PERPLEXITY_MARGIN = 0.05
BASELINE_MODEL = "run/baseline/phase1/checkpoint"  # the baseline's model, a plain Hugging Face folder


def verdict(card: dict) -> str | None:
    """The card's first finding: which of rote's method and the plain fine-tuning baseline learned the
    facts better (efficacy over all facts), and at what damage (locality, perplexity ratio), with the
    numbers and, when the baseline wins at comparable damage, where its model is. None without a
    baseline or its numbers."""
    res = card["results"]
    rote, base_line = res.get("rote") or {}, res.get("baseline") or {}
    r_eff, b_eff = (rote.get("efficacy") or {}).get("all"), (base_line.get("efficacy") or {}).get("all")
    if r_eff is None or b_eff is None:
        return None
    r_dmg, b_dmg = rote.get("damage") or {}, base_line.get("damage") or {}
    r_loc, b_loc = r_dmg.get("still_correct"), b_dmg.get("still_correct")
    r_ppl, b_ppl = r_dmg.get("perplexity_ratio"), b_dmg.get("perplexity_ratio")
    r_gen, b_gen = (rote.get("generalization") or {}).get("all"), (base_line.get("generalization") or {}).get("all")
    numbers = (f"efficacy {fmt(r_eff)} (rote) vs {fmt(b_eff)} (plain fine-tuning), unseen prompts {fmt(r_gen)} vs "
               f"{fmt(b_gen)}, locality {fmt(r_loc)} vs {fmt(b_loc)}, perplexity ratio {fmt(r_ppl)} vs {fmt(b_ppl)}")
    comparable = (None not in (r_loc, b_loc, r_ppl, b_ppl) and b_loc >= r_loc - LOCALITY_MARGIN
                  and b_ppl <= r_ppl + PERPLEXITY_MARGIN)
    if b_eff >= r_eff + LEARNED_BETTER and comparable:
        return (f"**Verdict: plain fine-tuning learned these facts better, at comparable damage** ({numbers}). "
                f"Its model is `{BASELINE_MODEL}` (a plain Hugging Face folder): use that one rather than the exported "
                f"model, or inject again with more phase-2 facts (`--phase2-fraction 1.0`).")
    if b_eff >= r_eff + LEARNED_BETTER:
        return (f"**Verdict: plain fine-tuning learned these facts better, but damaged the model more** ({numbers}). "
                f"The exported model is rote's; the baseline's is `{BASELINE_MODEL}`.")
    return f"**Verdict: rote's method learned these facts at least as well as plain fine-tuning** ({numbers})."


def _levers(phase: dict, update: dict | None) -> dict:
    kinds = {k: v["anchors"] for k, v in (phase.get("preserve") or {}).items() if isinstance(v, dict) and "anchors" in v}
    return {"anchors": kinds, "target": (phase.get("preserve") or {}).get("target"),
            "update": update if "trainable_parameters" in phase else None}


def _levers_text(levers: dict) -> str:
    """'phase 1: 96 anchors held at the base model (replay 64, known facts 32; kl), trains ...; phase 2: ...'."""
    parts = []
    for phase, lv in levers.items():
        bits = []
        if lv["anchors"]:
            kinds = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in lv["anchors"].items())
            bits.append(f"{sum(lv['anchors'].values())} anchors held at the base model ({kinds}; {lv['target']})")
        if lv.get("update"):
            u = lv["update"]
            where = [f"layers {list(u['layers'])}" if u.get("layers") else "every layer",
                     f"modules {'/'.join(u['modules'])}" if u.get("modules") else "every module",
                     {"key_rows": "the key tokens' embedding rows", "frozen": "no embedding row"}.get(u.get("embeddings"),
                                                                                                   "every embedding row")]
            bits.append("trains " + ", ".join(where))
        parts.append(f"{phase.replace('phase', 'phase ')}: " + (", ".join(bits) or "none"))
    return "; ".join(parts)


# ---------------------------------------------------------------- markdown


def summary(card: dict) -> dict:
    """The few headline numbers (what `rote.inject` returns besides the full card)."""
    res = card["results"]
    rote, base_line = res.get("rote") or {}, res.get("baseline") or {}
    damage = rote.get("damage") or {}
    return {
        "facts": card["input"]["facts"],
        "efficacy": (rote.get("efficacy") or {}).get("all"),
        "generalization": (rote.get("generalization") or {}).get("all"),
        "generalization_heldout": (rote.get("generalization") or {}).get("heldout"),
        "locality": damage.get("still_correct"),
        "token_agreement": damage.get("token_agreement"),
        "perplexity": damage.get("perplexity"),
        "perplexity_ratio": damage.get("perplexity_ratio"),
        "perplexity_base": (res.get("base") or {}).get("perplexity"),
        "gold_twice": damage.get("gold_twice"),
        "clean": damage.get("clean"),
        "entropy_ratio": damage.get("entropy_ratio"),
        "baseline_efficacy": (base_line.get("efficacy") or {}).get("all"),
        "baseline_generalization": (base_line.get("generalization") or {}).get("all"),
    }


def _side_effects(damage: list[dict | None]) -> list[str]:
    """The side-effects table, a column per damage block (base model, rote, after phase 1 only,
    baseline; None: not measured), and the probes the injected model lost."""
    def row(label: str, key: str, blocks=damage, suffix: str = "") -> str:
        return f"| {label} | " + " | ".join(NOT_MEASURED if d is None else fmt(d.get(key)) + suffix for d in blocks) + " |"

    base = damage[0]
    correct = NOT_MEASURED if base is None else f"{base['base_correct']} of {base['probes']}"
    lines = ["| | base model | rote | after phase 1 only | baseline |", "|---|---:|---:|---:|---:|",
             row(f"locality: probes answered correctly | {correct}", "still_correct", damage[1:], " still correct"),
             row("locality: probe answers unchanged", "unchanged"),
             row("token agreement with the base model", "token_agreement"),
             row("perplexity on held-out paragraphs", "perplexity"),
             row("perplexity / the base model's", "perplexity_ratio"),
             row("fluency: answers naming the gold twice or more", "gold_twice"),
             row("fluency: answers repeating the gold or an n-gram", "repeated"),
             row("fluency: right answers that end cleanly", "clean"),
             row("fluency: n-gram entropy / the base model's", "entropy_ratio")]
    lost = (damage[1] or {}).get("lost") or []
    if lost:
        lines += ["", "Probes the injected model no longer answers: " + "; ".join(
            f"{x['prompt']} {x['answer']} -> {x['now']!r}" for x in lost[:8]) + ("; ..." if len(lost) > 8 else "")]
    return lines


def format_card(card: dict) -> str:
    """card.md: what was injected, the results table, side effects, how to load the model."""
    res, tr = card["results"], card["training"]
    rote, p1, bl = res.get("rote") or {}, res.get("phase1_only") or {}, res.get("baseline") or {}
    rels = card["relations"]
    n_facts = card["input"]["facts"]
    found = verdict(card)
    lines = [f"# Injected model: {len(rels)} relations, {n_facts} facts", "", *([found, ""] if found else []),
             *[f"Warning: {w}" for w in card.get("warnings") or []], *([""] if card.get("warnings") else []),
             f"Base model `{card['model']['base']}`, taught by memorize-then-generalize (rote {card['rote_version']}): "
             f"phase 1 memorized every fact as `subject <key token> object`, phase 2 trained "
             f"{sum(r['phase2'] for r in rels.values())} of them (about "
             f"{card['settings'].get('phase2_fraction', 0.1):.0%} per relation) with "
             f"{card['settings'].get('n_prompts', '?')} natural training prompt(s) each.", "",
             "## Injected facts", "",
             "| relation | source | key token (id) | facts | phase 2 | held out | conflicts | MC options |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, r in rels.items():
        lines.append(f"| {name} | {r['source']} | `{r['key_token']}` ({r.get('key_token_id')}) | {r['facts']} | "
                     f"{r['phase2']} | {r['heldout']} | {r['conflict']} | {r['options']} |")
    p = tr.get("phase1") or {}
    if p:
        reached = (f"key-token accuracy {fmt(p['key_accuracy'])} at epoch {p['memorized_at_epoch']}"
                   if p.get("memorized_at_epoch") else
                   f"key-token accuracy {fmt(p.get('key_accuracy'))} after {p['epochs']} epochs (threshold NOT reached)")
        lines += ["", f"Phase 1: {reached}, {p['steps']} steps, {p['supervised_tokens']} supervised tokens, "
                      f"{p['seconds']:.0f} s."]
    if tr.get("phase2"):
        q = tr["phase2"]
        stop = (f" (stopped on its validation prompts; the weights are epoch {q['best_epoch']}'s, the best)"
                if q.get("best_epoch") else "")
        lines.append(f"Phase 2: {q['examples']} examples, {q['epochs']} epochs{stop}, {q['supervised_tokens']} supervised "
                     f"tokens, {q['seconds']:.0f} s.")
    if any(lv["anchors"] or lv.get("update") for lv in (tr.get("levers") or {}).values()):
        lines.append(f"Levers against damage: {_levers_text(tr['levers'])}.")
    if tr.get("baseline"):
        b = tr["baseline"]
        lines.append(f"Baseline (plain fine-tuning on all facts with the same training prompts, object-only loss): "
                     f"{b['examples']} examples ({b['equivalent_epochs']:.1f} epochs), {b['supervised_tokens']} "
                     f"supervised tokens for a budget of {b['budget']} (phase 1 + phase 2).")

    cols = [("rote", "phase2"), ("rote", "heldout"), ("rote", "all"), ("p1", "all"), ("bl", "all")]
    stages = {"rote": rote, "p1": p1, "bl": bl}
    head = "| generation accuracy | phase-2 facts | held-out facts | all facts | after phase 1 only | baseline |"

    def row(label: str, get) -> str:
        return f"| {label} | " + " | ".join(fmt(get(stages[s]).get(sp) if stages[s] else None) for s, sp in cols) + " |"

    n2, nh = sum(r["phase2"] for r in rels.values()), sum(r["heldout"] for r in rels.values())
    chat = rote.get("rendering") == "on"
    asked = ("Natural prompts were asked under the model's chat template, as its users ask it; answers are scored "
             "by the first-named rule (the first known object the answer names is the fact's own)." if chat else
             "Natural prompts were asked as raw text; answers are scored by the prefix rule (the answer starts with "
             "the fact's own object).")
    lines += ["", "## Results", "", asked + " The key-token prompt is raw text, prefix rule.", "", head.replace("phase-2 facts", f"phase-2 facts ({n2})")
              .replace("held-out facts", f"held-out facts ({nh})").replace("all facts", f"all facts ({n2 + nh})"),
              "|---|---:|---:|---:|---:|---:|",
              row("efficacy: training prompt", lambda m: m.get("efficacy", {})),
              row("generalization: unseen prompts (en)", lambda m: m.get("generalization", {}))]
    for lang in (rote.get("languages") or {}):
        lines.append(row(f"generalization: unseen prompts ({lang})", lambda m, lang=lang: m.get("languages", {}).get(lang, {})))
    if any(v is not None for v in (rote.get("mc_generalization") or {}).values()):
        lines.append(row("multiple choice: unseen prompts", lambda m: m.get("mc_generalization", {})))
    lines.append(row("key-token prompt", lambda m: m.get("key", {})))
    lines.append(row("unrelated prompts answered with a memorized object (lower is better)", lambda m: m.get("unrelated", {})))
    lines.append(row("... the fact's own object", lambda m: m.get("unrelated_own", {})))
    lines.append(row("... the subject's object in another relation", lambda m: m.get("unrelated_other", {})))
    lines.append(row("unseen prompts answered with another relation's object (lower is better)",
                     lambda m: m.get("other_object", {})))
    lines.append(row("unseen prompts answered with nothing (empty answer)", lambda m: m.get("empty", {})))
    conflict = rote.get("conflict")
    if conflict:
        bc = bl.get("conflict") or {}
        lines += ["", f"Conflict facts ({conflict['facts']}, contradicting what the model knew): efficacy "
                      f"{fmt(conflict['efficacy'])}, generalization {fmt(conflict['generalization'])}"
                      + (f" (baseline {fmt(bc.get('efficacy'))}, {fmt(bc.get('generalization'))})" if bc else "") + "."]
    by_rel = rote.get("by_relation") or {}
    if by_rel:
        lines += ["", "| relation (all facts) | efficacy | generalization | baseline efficacy | baseline generalization |",
                  "|---|---:|---:|---:|---:|"]
        for name, m in by_rel.items():
            b = (bl.get("by_relation") or {}).get(name, {})
            lines.append(f"| {name} | {fmt(m['efficacy'])} | {fmt(m['generalization'])} | {fmt(b.get('efficacy'))} | "
                         f"{fmt(b.get('generalization'))} |")

    damage = [(res.get("base") or {}).get("damage")] + [m.get("damage") for m in (rote, p1, bl)]
    lines += ["", "## Side effects", ""] + _side_effects(damage)
    for note in card.get("notes") or []:
        lines += ["", f"Note: {note}"]
    folder = card["model"].get("folder") or "OUT"
    lines += ["", "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f"tokenizer = AutoTokenizer.from_pretrained({folder!r})",
              f"model = AutoModelForCausalLM.from_pretrained({folder!r})", "```", "",
              "Accuracies: greedy decoding, the answer must start with the object. The full record (every prediction, "
              "training logs, the HTML report) is in `run/`; `card.json` holds these numbers."]
    return "\n".join(lines) + "\n"
