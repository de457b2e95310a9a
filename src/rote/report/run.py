"""`rote report RUN`: one self-contained HTML page about a run, from its files only (no torch).

Reads what rote.runner wrote (config.yaml, facts.jsonl, phase*/metrics.jsonl and summary.json,
eval/<stage>/summary.json (rows and damage block) and predictions.jsonl, probe/geometry.json), so a
report can be rebuilt on a laptop from a copied run directory. The numbers' tables come from rote.report.headline; the
page, tables and figures from the shared helpers (rote.report.html, rote.report.figures).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rote.evaluation.metrics import pick
from rote.fileio import read_json, read_jsonl, read_summary
from rote.names import CONFIG_FILE, FACTS_FILE, KEY_TOKENS_FILE, PREDICTIONS_FILE, eval_dir
from rote.report import figures
from rote.report.headline import (DAMAGE_NOTE, DAMAGE_ROWS, METRIC_NAMES, SPLIT_LABELS, cfg_value, missing_line,
                                  missing_stages, prompts_label, read_run_config, sort_key, stage_damage, stage_status,
                                  run_metric, stage_summaries)
from rote.report.html import e, fmt, table, write_page
from rote.report.probe import probe_section_html


def _section_title(config: dict, run_dir: Path) -> str:
    meta = config.get("meta") or {}
    status = stage_status(run_dir, config)
    config_yaml = (run_dir / CONFIG_FILE).read_text(encoding="utf-8")  # verbatim, as the run wrote it
    meta_line = " · ".join(f"{k} {v}" for k, v in (("rote", meta.get("rote_version")), ("commit", meta.get("git_commit")),
                                                   ("created", meta.get("created"))) if v)
    return "\n".join([
        f"<h1>{e(cfg_value(config, 'name', run_dir.name))}</h1>",
        f'<p class="meta">{e(str(run_dir))} · {e(meta_line)}</p>',
        f'<p class="meta">model <code>{e(cfg_value(config, "model.name"))}</code> · subjects '
        f'<code>{e(cfg_value(config, "data.subjects"))}</code> · seed {e(cfg_value(config, "seed"))}</p>',
        table(list(status), [list(status.values())]),
        f"<details><summary>config.yaml</summary><pre>{e(config_yaml)}</pre></details>",
    ])


def _section_data(run_dir: Path) -> str:
    path = run_dir / FACTS_FILE
    if not path.is_file():
        return "<h2>Data</h2><p>facts.jsonl is missing (the data stage has not finished).</p>"
    facts = read_jsonl(path)
    counts = Counter((f["relation"], f["split"]) for f in facts)
    relations = list(dict.fromkeys(f["relation"] for f in facts))
    body = [[r, counts[r, "phase2"], counts[r, "heldout"], counts[r, "phase2"] + counts[r, "heldout"]] for r in relations]
    body.append(["all", sum(b[1] for b in body), sum(b[2] for b in body), len(facts)])
    subjects = len({f["subject_id"] for f in facts})
    sample = [[f["id"], f["subject"], f["relation"], f["object"], f["split"], len(f.get("options", []))] for f in facts[:5]]
    keys = read_json(run_dir / KEY_TOKENS_FILE)
    key_line = ""
    if keys and keys.get("tokens"):
        tokens = ", ".join(f"{t} = {i}" for t, i in keys["tokens"].items())
        key_line = f'<p class="note">key tokens: {e(tokens)} (init: {e(keys.get("init", "?"))})</p>'
    return "\n".join([
        "<h2>Data</h2>",
        f"<p>{len(facts)} facts about {subjects} fictional subjects.</p>",
        table(["relation", "phase2 facts", "held-out", "all"], body),
        key_line,
        "<p>Sample facts:</p>",
        table(["id", "subject", "relation", "object", "split", "options"], sample),
    ])


def _section_training(run_dir: Path, figures_dir: Path) -> str:
    img = figures.embed(figures.training_curves(run_dir), figures_dir / "training.png", "training curves")
    fields = ("epochs", "steps", "examples", "supervised_tokens", "seconds", "stopped_early", "processes", "memorized_at_epoch")
    body = []
    for phase in ("phase1", "phase2"):
        summary = read_summary(run_dir / phase)  # seconds live apart, in timing.json
        if summary is None:
            state = "running or stopped" if (run_dir / phase / "metrics.jsonl").is_file() else "not run"
            body.append([phase] + [state] + [""] * (len(fields) - 1))
        else:
            body.append([phase] + ["-" if summary.get(f) is None else summary[f] for f in fields])
    return "\n".join(["<h2>Training</h2>", img or "<p>No training metrics yet.</p>",
                      table(["phase", *fields], body)])


def _section_accuracy(present: dict[str, list[dict]], figures_dir: Path, shared: bool, metric: str) -> str:
    if not present:
        return ""
    img = figures.embed(figures.accuracy_by_stage(present, metric), figures_dir / "accuracy.png", "accuracy by stage")
    metrics = (["first"] if metric == "first" else []) + ["prefix", "contains", "mc", "prob"] \
        + (["other_object", "any_object"] if shared else []) + ["empty"]
    header = ["facts", "prompts", "stage", "n", *metrics]
    body, classes = [], []
    keys = sorted({(r["split"], r["prompt_set"], r["language"]) for rows in present.values() for r in rows
                   if r["relation"] == "all" and r["split"] != "all"},
                  key=lambda k: sort_key(dict(zip(("split", "prompt_set", "language"), k))))
    for split, prompt_set, language in keys:
        first = True
        for stage, rows in present.items():
            row = pick(rows, split=split, prompt_set=prompt_set, language=language, relation="all")
            if row is None:
                continue
            label = prompts_label(row)
            body.append([SPLIT_LABELS.get(split, split) if first else "", label if first else "", stage, row["n"],
                         *[fmt(row.get(m)) for m in metrics]])
            classes.append("group" if first else "")
            first = False
    legend = "; ".join(f"<b>{e(m)}</b>: {e(METRIC_NAMES[m])}" for m in metrics)
    return "\n".join([
        "<h2>Accuracy by stage</h2>", img,
        f'<p class="note">All relations together. {legend}. n = queries (facts x prompts). '
        f"For <code>unrelated</code> prompts the accuracy columns count answers naming the memorized object: "
        f"failures of the control, not successes.</p>",
        table(header, body, classes),
    ])


def _section_languages(present: dict[str, list[dict]], figures_dir: Path, metric: str) -> str:
    img = figures.embed(figures.languages(present, metric), figures_dir / "languages.png", "accuracy by language")
    if not img:
        return ""
    per_stage = {s: figures.language_values(rows) for s, rows in present.items()}
    langs = list(dict.fromkeys(l for v in per_stage.values() for l in v))
    body = [[l] + [f"{fmt((v.get(l) or {}).get(metric))} (n={(v.get(l) or {}).get('n', 0)})" for v in per_stage.values()]
            for l in langs]
    rule = "first-named rule (asked under the chat template)" if metric == "first" else "prefix rule"
    return "\n".join(["<h2>Languages</h2>", img,
                      f'<p class="note">Held-out facts, test prompts, {rule}. Phase 2 trains on English prompts only.</p>',
                      table(["language", *per_stage], body)])


def _section_unrelated(present: dict[str, list[dict]]) -> str:
    """The negative control: a prompt about the subject that asks something else. A model that
    just binds subject -> objects answers it with one of the subject's memorized objects. The
    headline counts any of them (with shared subjects, the person's other city as much as the
    fact's own); the split into own and other follows."""
    if not present:
        return ""
    body, classes = [], []
    for split in ("phase2", "heldout"):
        for stage, rows in present.items():
            unrel = pick(rows, split=split, prompt_set="unrelated", language="en", relation="all")
            test = pick(rows, split=split, prompt_set="test", language="en", relation="all")
            if unrel is None:
                continue
            any_object = unrel.get("any_object")
            if any_object is None:  # a summary written before the other object was counted
                any_object = unrel["prefix"]
            body.append([SPLIT_LABELS[split], stage, unrel["n"], fmt(any_object), fmt(unrel["prefix"]),
                         fmt(unrel.get("other_object")), fmt(unrel.get("empty")), fmt(test["prefix"]) if test else "-"])
            classes.append("warn" if (any_object or 0) > 0.1 else "")
    if not body:
        return "<h2>Unrelated-prompt control</h2><p>No unrelated prompts were evaluated.</p>"
    return "\n".join([
        "<h2>Unrelated-prompt control</h2>",
        '<div class="callout">Unrelated prompts ask about the subject but not about the relation. The rate of '
        "answering them with any memorized object of the subject should stay near 0; when it rises with the "
        "test-prompt accuracy, the model answers a memorized object whatever is asked and test accuracy overstates "
        "generalization. Rows above 0.10 are shaded.</div>",
        table(["facts", "stage", "n", "any memorized object", "own object", "other relation's object", "empty answer",
                "test-prompt accuracy"], body, classes),
    ])


def _section_forms(present: dict[str, list[dict]]) -> str:
    """Held-out facts per prompt form: small instruct models often answer questions with nothing
    and complete statements with whatever they memorized, which an average over forms hides."""
    body = []
    for prompt_set in ("train", "test", "unrelated"):
        for form in ("statement", "question", "qa"):
            found = {s: pick(rows, split="heldout", prompt_set=prompt_set, language="en", relation="all", form=form)
                     for s, rows in present.items()}
            if not any(found.values()):
                continue
            n = next(r["n"] for r in found.values() if r)
            body.append([prompt_set, form, n] + [
                f"{fmt(r and r['prefix'])} / {fmt(r and r.get('any_object'))} / {fmt(r and r.get('empty'))}"
                for r in found.values()])
    if not body:
        return ""
    return "\n".join([
        "<h2>By prompt form (held-out facts)</h2>",
        '<p class="note">Each cell: own object / any memorized object / empty answer. Forms: a statement to '
        "complete, a question ending in \"?\", a \"Q: ... A:\" prompt.</p>",
        table(["prompts", "form", "n", *present], body),
    ])


def _section_other_object(present: dict[str, list[dict]]) -> str:
    """Shared-subject mode: answering with the subject's object in another relation means the key
    token (or prompt) did not pick the relation. Per relation, since relations can differ sharply."""
    stages = list(present)
    body = []
    for split in ("phase2", "heldout"):
        for prompt_set in ("key", "train", "test"):
            relations = list(dict.fromkeys(r["relation"] for rows in present.values() for r in rows
                                           if r["split"] == split and r["prompt_set"] == prompt_set and r["language"] == "en"))
            for relation in sorted(relations, key=lambda r: r != "all"):
                found = [pick(present[s], split=split, prompt_set=prompt_set, language="en", relation=relation) for s in stages]
                body.append([SPLIT_LABELS[split], prompt_set, relation] +
                            [f"{fmt(r and r.get('other_object'))} / {fmt(r and r['prefix'])}" for r in found])
    return "\n".join([
        "<h2>Which relation's object (shared subjects)</h2>",
        '<p class="note">Each cell: the answer is the subject\'s object in another relation / the fact\'s own object. '
        "Chance between two relations of the same object type shows as both near 0.5.</p>",
        table(["facts", "prompts", "relation", *stages], body),
    ])


def _section_damage(run_dir: Path) -> str:
    """Damage to general ability at each eval stage (its summary's damage block), and the
    locality probes each stage no longer answers."""
    damage = stage_damage(run_dir)
    if not damage:
        return ""
    body = [[label] + ["not measured" if d is None else fmt(d.get(key)) for d in damage.values()]
            for label, key in DAMAGE_ROWS]
    lost = [f"<li>{e(stage)}: " + e("; ".join(f"{x['prompt']} {x['answer']} -> {x['now']!r}" for x in d["lost"]))
            + "</li>" for stage, d in damage.items() if d and d.get("lost")]
    base = damage.get("base") or {}
    return "\n".join([
        "<h2>Damage to general ability and fluency</h2>",
        f'<p class="note">{base.get("base_correct", "?")} of {base.get("probes", "?")} locality probes answered '
        f"correctly by the base model. {e(DAMAGE_NOTE.replace(chr(10), ' '))}.</p>",
        table(["measure", *damage], body),
        f"<p>Probes no longer answered:</p><ul>{''.join(lost)}</ul>" if lost else "",
    ])


def _samples(run_dir: Path, stage: str, k: int = 8) -> tuple[list[dict], list[dict]]:
    """Up to k right and k wrong held-out English test-prompt records, one per fact before any
    fact repeats, so the sample is not ten paraphrases of the first fact. Streams the file,
    which can be tens of MB (each record carries every option's log-prob)."""
    path = run_dir / eval_dir(stage) / PREDICTIONS_FILE
    right, wrong = [], []
    if not path.is_file():
        return right, wrong
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"heldout"' not in line:  # cheap pre-filter before parsing
                continue
            r = json.loads(line)
            if r["split"] == "heldout" and r["prompt_set"] == "test" and r["language"] == "en":
                (right if r.get("hit_first", r["hit_prefix"]) else wrong).append(r)  # the record's own rule
    return _one_per_fact_first(right, k), _one_per_fact_first(wrong, k)


def _one_per_fact_first(records: list[dict], k: int) -> list[dict]:
    """The first k of `records` in rounds: each fact's first record (by prompt, then fact), then each
    fact's second, and so on."""
    seen: dict[str, int] = {}
    ranked = []
    for r in sorted(records, key=lambda r: (r["prompt_index"], r["fact_id"])):
        seen[r["fact_id"]] = seen.get(r["fact_id"], -1) + 1
        ranked.append((seen[r["fact_id"]], r["prompt_index"], r["fact_id"], r))
    return [r for *_, r in sorted(ranked, key=lambda t: t[:3])][:k]


def _section_samples(run_dir: Path, present: dict[str, list[dict]]) -> str:
    if not present:
        return ""
    stage = list(present)[-1]
    right, wrong = _samples(run_dir, stage)
    out = [f"<h2>Sample generations ({e(stage)}, held-out facts, test prompts)</h2>"]
    for title, recs in (("right", right), ("wrong", wrong)):
        out.append(f"<h3>{title} ({len(recs)} shown)</h3>")
        out.append(table(["fact", "prompt", "gold", "generation"],
                          [[r["fact_id"], r["prompt"], r["gold"], r["generation"]] for r in recs], cls="text")
                   if recs else "<p>none</p>")
    return "\n".join(out)


# ---------------------------------------------------------------- the page


def build_report(run_dir: str | Path) -> Path:
    """Write run_dir/report/report.html (figures embedded, also saved under report/figures) and return its path."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    out_dir = run_dir / "report"
    figures_dir = out_dir / "figures"
    present = stage_summaries(run_dir)
    shared = cfg_value(config, "data.subjects") == "shared"
    metric = run_metric(run_dir)  # the headline rule: prefix, or first-named under a chat template
    missing = missing_stages(run_dir, config, present)
    sections = [
        _section_title(config, run_dir),
        f'<p class="{"warn" if any("not finished" in m for m in missing) else "meta"}">{e(missing_line(missing))}</p>',
        _section_data(run_dir),
        _section_training(run_dir, figures_dir),
        _section_accuracy(present, figures_dir, shared, metric) or "<h2>Accuracy by stage</h2><p>No evaluation has finished yet.</p>",
        _section_unrelated(present),
        _section_forms(present),
        _section_languages(present, figures_dir, metric),
        _section_damage(run_dir),
        _section_other_object(present) if shared and present else "",
        _section_samples(run_dir, present),
        probe_section_html(run_dir),  # empty until `rote probe RUN` has written probe/geometry.json
    ]
    return write_page(out_dir / "report.html", f"rote report: {cfg_value(config, 'name', run_dir.name)}", sections)
