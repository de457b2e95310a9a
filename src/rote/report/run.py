"""`rote report RUN`: tables for the terminal and one self-contained HTML page, from files only.

Reads what `runner.py` wrote (config.yaml, facts.jsonl, phase*/metrics.jsonl and summary.json,
eval/<stage>/summary.json and predictions.jsonl) and never imports torch, so a report can be
rebuilt on a laptop from a copied run directory. Any stage may be missing (a run in progress,
or a stage left out of `eval.stages`): the report shows what exists and says what is missing.
"""
from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from pathlib import Path

import yaml

from rote import plots
from rote.fileio import is_done, read_json, read_seconds
from rote.names import EVAL_STAGES, LANGUAGES, PROMPT_SETS, RUN_STAGES, planned_stages
from rote.metrics import headline, pick
from rote.probe_report import probe_section_html

SPLIT_LABELS = {"phase2": "phase2 facts", "heldout": "held-out"}
METRIC_NAMES = {
    "prefix": "generation accuracy, prefix rule (the answer starts with the fact's own object)",
    "contains": "generation accuracy, contains rule (the fact's own object appears anywhere in the answer)",
    "mc": "multiple-choice accuracy (gold option ranks first)",
    "prob": "object probability (normalised over the options)",
    "other_object": "the answer is the subject's memorized object of another relation (the person's other city)",
    "any_object": "the answer is any memorized object of the subject: own + other",
    "empty": "the answer is empty (an immediate end of sequence or newline)",
}
UNRELATED_NOTE = ("for `unrelated` prompts, an answer naming the fact's own object or another memorized object\n"
                  "is a failure of the control: their sum (any memorized object) should stay near 0")
FORM_LABELS = {"statement": "· statement", "question": "· question", "qa": "· Q: A:"}


# ---------------------------------------------------------------- reading the run directory


def _read_config(run_dir: Path) -> dict:
    """The raw {config, meta} mapping. Read as plain YAML, not through rote.config, so a run made
    by an older version (with since-renamed keys) can still be reported."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {path} is missing")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _cfg(config: dict, dotted: str, default=None):
    node = config.get("config", {})
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def stage_summaries(run_dir: str | Path) -> dict[str, list[dict]]:
    """stage -> aggregate rows, for the eval stages that have a summary, in order base, phase1, phase2."""
    out = {}
    for stage in EVAL_STAGES:
        summary = read_json(Path(run_dir) / "eval" / stage / "summary.json")
        if summary is not None:
            out[stage] = summary["rows"]
    return out


def stage_status(run_dir: Path, config: dict) -> dict[str, str]:
    """Each runner stage: 'done (N s)', 'not in config' (skipped on purpose) or 'not finished'."""
    planned = planned_stages(_cfg(config, "eval.stages", EVAL_STAGES), bool(_cfg(config, "phase2.checkpoint")))
    status = {}
    for stage in RUN_STAGES[:-1]:  # the report itself is being written
        if is_done(run_dir, stage):
            seconds = read_seconds(run_dir / stage)
            status[stage] = f"done ({seconds:.0f} s)" if isinstance(seconds, (int, float)) else "done"
        else:
            status[stage] = "not finished" if stage in planned else "not in config"
    return status


def missing_stages(run_dir: Path, config: dict, present: dict) -> list[str]:
    """Eval stages without a summary, each with why: `phase1 (not finished)`, `base (not in config)`."""
    status = stage_status(run_dir, config)
    return [f"{s} ({status['eval/' + s]})" for s in EVAL_STAGES if s not in present]


def _missing_line(missing: list[str]) -> str:
    return "missing evaluations: " + (", ".join(missing) if missing else "none")


def _sort_key(row: dict) -> tuple:
    split = ("phase2", "heldout").index(row["split"]) if row["split"] in ("phase2", "heldout") else 9
    ps = PROMPT_SETS.index(row["prompt_set"]) if row["prompt_set"] in PROMPT_SETS else 9
    lang = LANGUAGES.index(row["language"]) if row["language"] in LANGUAGES else 9
    return split, ps, lang, row["language"]


def _prompts_label(row: dict) -> str:
    """`test` for English test prompts, `test (de)` for their translations."""
    if row["prompt_set"] == "languages":
        return f"test ({row['language']})"
    if row["language"] != "en":
        return f"{row['prompt_set']} ({row['language']})"
    return row["prompt_set"]


def headline_rows(run_dir: str | Path, metric: str = "prefix") -> list[dict]:
    """rote.metrics.headline over the stages that exist: one row per split x prompt set x language
    (all relations), a column per stage; ordered phase2 facts then held-out, key..unrelated, languages."""
    return sorted(headline(stage_summaries(run_dir), metric), key=_sort_key)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


# ---------------------------------------------------------------- terminal table


def format_headline(run_dir: str | Path, metric: str = "prefix") -> str:
    """Plain-text table: rows split x prompt set x language, English test and unrelated prompts
    also per prompt form; columns n and each stage's `metric`, then (shared subjects) the other
    relation's object, the empty-answer rate and multiple-choice accuracy per stage. Below it,
    the unrelated-prompt control's headline and how many seeds the numbers stand on."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    summaries = stage_summaries(run_dir)
    stages = list(summaries)
    title = f"{_cfg(config, 'name', run_dir.name)}  ({run_dir})"
    if not stages:
        return f"{title}\nno evaluation summaries yet\n{_missing_line(missing_stages(run_dir, config, {}))}"
    groups = [(metric, "gen " + metric if metric in ("prefix", "contains") else metric)]
    if _cfg(config, "data.subjects") == "shared":
        groups.append(("other_object", "other object"))
    if any(r.get("empty") is not None for rows in summaries.values() for r in rows):
        groups.append(("empty", "empty answer"))
    has_mc = any(r.get("mc") is not None for rows in summaries.values() for r in rows)
    if has_mc and metric not in ("mc", "prob"):
        groups.append(("mc", "MC"))

    col = 7
    head1 = f"{'facts':<13}{'prompts':<14}{'n':>6}" + "".join(f" | {label:^{col * len(stages) - 1}}" for _, label in groups)
    head2 = f"{'':<33}" + "".join(" | " + "".join(f"{s:>{col}}" for s in stages)[1:] for _ in groups)
    lines = [title, head1, head2, "-" * len(head1)]

    def line(split_label: str, label: str, n, where: dict) -> str:
        cells = f"{split_label:<13}{label:<14}{n:>6}"
        for m, _ in groups:
            found = {s: pick(summaries[s], **where) for s in stages}
            cells += " | " + "".join(f"{_fmt((found[s] or {}).get(m)):>{col}}" for s in stages)[1:]
        return cells

    previous_split = None
    for row in sorted(headline(summaries, metric), key=_sort_key):
        split_label = SPLIT_LABELS.get(row["split"], row["split"]) if row["split"] != previous_split else ""
        previous_split = row["split"]
        where = {"split": row["split"], "prompt_set": row["prompt_set"], "language": row["language"], "relation": "all"}
        lines.append(line(split_label, _prompts_label(row), row["n"], where))
        if row["prompt_set"] in ("test", "unrelated") and row["language"] == "en":
            for form, label in FORM_LABELS.items():
                found = [r for r in (pick(summaries[s], **where, form=form) for s in stages) if r]
                if found:
                    lines.append(line("", label, found[0]["n"], {**where, "form": form}))
    lines.append("")
    for m, label in groups:  # one legend line per column group keeps the text within the width
        lines.append(f"{label}: {METRIC_NAMES.get(m, m)}.".replace(" (the person's other city)", ""))
    lines.append(f"{UNRELATED_NOTE[0].upper()}{UNRELATED_NOTE[1:]}.")
    control = [(s, pick(summaries[s], split="heldout", prompt_set="unrelated", language="en", relation="all"))
               for s in stages]
    if any(r and r.get("any_object") is not None for _, r in control):
        lines.append("Held-out facts, unrelated prompts answered with a memorized object: "
                     + ", ".join(f"{s} {_fmt(r and r.get('any_object'))}" for s, r in control) + ".")
    lines.append(f"One run, seed {_cfg(config, 'seed', '?')}: one seed, not a mean. Across seeds and CPU types the numbers\n"
                 f"move by a few hundredths or more; README gives the measured spread.")
    lines.append(_missing_line(missing_stages(run_dir, config, summaries)))
    return "\n".join(lines)


# ---------------------------------------------------------------- HTML pieces


def _e(value) -> str:
    return html.escape(str(value))


def _table(header: list[str], body: list[list], classes: list[str] | None = None, cls: str = "") -> str:
    """A small HTML table; every cell is escaped here, so callers pass plain values."""
    out = [f'<table class="{cls}">' if cls else "<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(body):
        row_cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{row_cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(fig, name: str, figures_dir: Path, alt: str) -> str:
    """Save `fig` under report/figures and embed the same PNG bytes, so the page stands alone."""
    path = figures_dir / f"{name}.png"
    if fig is None:
        path.unlink(missing_ok=True)  # a figure from an earlier build must not outlive its data
        return ""
    plots.save(fig, path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1050px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
table.text td { white-space: pre-wrap; }  /* generations: keep their spaces and line breaks visible */
tr.group td { border-top: 2px solid #bbb; }
tr.warn td { background: #fdecea; } p.warn { color: #b03a2e; }
.meta { color: #666; } .note { color: #555; font-size: 13px; }
.callout { border-left: 4px solid #dd8452; background: #fdf6f0; padding: .5em 1em; margin: 1em 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: 12px; }
img { max-width: 100%; } code { background: #f2f2f2; padding: 0 3px; }
"""


def _section_title(config: dict, run_dir: Path) -> str:
    meta = config.get("meta") or {}
    status = stage_status(run_dir, config)
    config_yaml = (run_dir / "config.yaml").read_text(encoding="utf-8")  # verbatim, as the run wrote it
    meta_line = " · ".join(f"{k} {v}" for k, v in (("rote", meta.get("rote_version")), ("commit", meta.get("git_commit")),
                                                   ("created", meta.get("created"))) if v)
    return "\n".join([
        f"<h1>{_e(_cfg(config, 'name', run_dir.name))}</h1>",
        f'<p class="meta">{_e(str(run_dir))} · {_e(meta_line)}</p>',
        f'<p class="meta">model <code>{_e(_cfg(config, "model.name"))}</code> · subjects '
        f'<code>{_e(_cfg(config, "data.subjects"))}</code> · seed {_e(_cfg(config, "seed"))}</p>',
        _table(list(status), [list(status.values())]),
        f"<details><summary>config.yaml</summary><pre>{_e(config_yaml)}</pre></details>",
    ])


def _section_data(run_dir: Path) -> str:
    path = run_dir / "facts.jsonl"
    if not path.is_file():
        return "<h2>Data</h2><p>facts.jsonl is missing (the data stage has not finished).</p>"
    facts = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    counts = Counter((f["relation"], f["split"]) for f in facts)
    relations = list(dict.fromkeys(f["relation"] for f in facts))
    body = [[r, counts[r, "phase2"], counts[r, "heldout"], counts[r, "phase2"] + counts[r, "heldout"]] for r in relations]
    body.append(["all", sum(b[1] for b in body), sum(b[2] for b in body), len(facts)])
    subjects = len({f["subject_id"] for f in facts})
    sample = [[f["id"], f["subject"], f["relation"], f["object"], f["split"], len(f.get("options", []))] for f in facts[:5]]
    keys = read_json(run_dir / "key_tokens.json")
    key_line = ""
    if keys and keys.get("tokens"):
        tokens = ", ".join(f"{t} = {i}" for t, i in keys["tokens"].items())
        key_line = f'<p class="note">key tokens: {_e(tokens)} (init: {_e(keys.get("init", "?"))})</p>'
    return "\n".join([
        "<h2>Data</h2>",
        f"<p>{len(facts)} facts about {subjects} fictional subjects.</p>",
        _table(["relation", "phase2 facts", "held-out", "all"], body),
        key_line,
        "<p>Sample facts:</p>",
        _table(["id", "subject", "relation", "object", "split", "options"], sample),
    ])


def _section_training(run_dir: Path, figures_dir: Path) -> str:
    img = _figure(plots.training_curves(run_dir), "training", figures_dir, "training curves")
    fields = ("epochs", "steps", "examples", "supervised_tokens", "seconds", "stopped_early", "processes", "memorized_at_epoch")
    body = []
    for phase in ("phase1", "phase2"):
        summary = read_json(run_dir / phase / "summary.json")
        if summary is None:
            state = "running or stopped" if (run_dir / phase / "metrics.jsonl").is_file() else "not run"
            body.append([phase] + [state] + [""] * (len(fields) - 1))
        else:
            summary = {**(read_json(run_dir / phase / "timing.json") or {}), **summary}  # seconds live apart
            body.append([phase] + ["-" if summary.get(f) is None else summary[f] for f in fields])
    return "\n".join(["<h2>Training</h2>", img or "<p>No training metrics yet.</p>",
                      _table(["phase", *fields], body)])


def _section_accuracy(present: dict[str, list[dict]], figures_dir: Path, shared: bool) -> str:
    if not present:
        return ""
    img = _figure(plots.accuracy_by_stage(present), "accuracy", figures_dir, "accuracy by stage")
    metrics = ["prefix", "contains", "mc", "prob"] + (["other_object", "any_object"] if shared else []) + ["empty"]
    header = ["facts", "prompts", "stage", "n", *metrics]
    body, classes = [], []
    keys = sorted({(r["split"], r["prompt_set"], r["language"]) for rows in present.values() for r in rows
                   if r["relation"] == "all" and r["split"] != "all"},
                  key=lambda k: _sort_key(dict(zip(("split", "prompt_set", "language"), k))))
    for split, prompt_set, language in keys:
        first = True
        for stage, rows in present.items():
            row = pick(rows, split=split, prompt_set=prompt_set, language=language, relation="all")
            if row is None:
                continue
            label = _prompts_label(row)
            body.append([SPLIT_LABELS.get(split, split) if first else "", label if first else "", stage, row["n"],
                         *[_fmt(row.get(m)) for m in metrics]])
            classes.append("group" if first else "")
            first = False
    legend = "; ".join(f"<b>{_e(m)}</b>: {_e(METRIC_NAMES[m])}" for m in metrics)
    return "\n".join([
        "<h2>Accuracy by stage</h2>", img,
        f'<p class="note">All relations together. {legend}. n = queries (facts x prompts). '
        f"For <code>unrelated</code> prompts the accuracy columns count answers naming the memorized object: "
        f"failures of the control, not successes.</p>",
        _table(header, body, classes),
    ])


def _section_languages(present: dict[str, list[dict]], figures_dir: Path) -> str:
    img = _figure(plots.languages(present), "languages", figures_dir, "accuracy by language")
    if not img:
        return ""
    per_stage = {s: plots.language_values(rows) for s, rows in present.items()}
    langs = list(dict.fromkeys(l for v in per_stage.values() for l in v))
    body = [[l] + [f"{_fmt((v.get(l) or {}).get('prefix'))} (n={(v.get(l) or {}).get('n', 0)})" for v in per_stage.values()]
            for l in langs]
    return "\n".join(["<h2>Languages</h2>", img,
                      '<p class="note">Held-out facts, test prompts, prefix rule. Phase 2 trains on English prompts only.</p>',
                      _table(["language", *per_stage], body)])


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
            body.append([SPLIT_LABELS[split], stage, unrel["n"], _fmt(any_object), _fmt(unrel["prefix"]),
                         _fmt(unrel.get("other_object")), _fmt(unrel.get("empty")), _fmt(test["prefix"]) if test else "-"])
            classes.append("warn" if (any_object or 0) > 0.1 else "")
    if not body:
        return "<h2>Unrelated-prompt control</h2><p>No unrelated prompts were evaluated.</p>"
    return "\n".join([
        "<h2>Unrelated-prompt control</h2>",
        '<div class="callout">Unrelated prompts ask about the subject but not about the relation. The rate of '
        "answering them with any memorized object of the subject should stay near 0; when it rises with the "
        "test-prompt accuracy, the model answers a memorized object whatever is asked and test accuracy overstates "
        "generalization. Rows above 0.10 are shaded.</div>",
        _table(["facts", "stage", "n", "any memorized object", "own object", "other relation's object", "empty answer",
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
                f"{_fmt(r and r['prefix'])} / {_fmt(r and r.get('any_object'))} / {_fmt(r and r.get('empty'))}"
                for r in found.values()])
    if not body:
        return ""
    return "\n".join([
        "<h2>By prompt form (held-out facts)</h2>",
        '<p class="note">Each cell: own object / any memorized object / empty answer. Forms: a statement to '
        "complete, a question ending in \"?\", a \"Q: ... A:\" prompt.</p>",
        _table(["prompts", "form", "n", *present], body),
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
                            [f"{_fmt(r and r.get('other_object'))} / {_fmt(r and r['prefix'])}" for r in found])
    return "\n".join([
        "<h2>Which relation's object (shared subjects)</h2>",
        '<p class="note">Each cell: the answer is the subject\'s object in another relation / the fact\'s own object. '
        "Chance between two relations of the same object type shows as both near 0.5.</p>",
        _table(["facts", "prompts", "relation", *stages], body),
    ])


def _samples(run_dir: Path, stage: str, k: int = 8) -> tuple[list[dict], list[dict]]:
    """Up to k right and k wrong held-out English test-prompt records, one per fact before any
    fact repeats, so the sample is not ten paraphrases of the first fact. Streams the file,
    which can be tens of MB (each record carries every option's log-prob)."""
    path = run_dir / "eval" / stage / "predictions.jsonl"
    right, wrong = [], []
    if not path.is_file():
        return right, wrong
    with open(path, encoding="utf-8") as f:
        for line in f:
            if '"heldout"' not in line:  # cheap pre-filter before parsing
                continue
            r = json.loads(line)
            if r["split"] == "heldout" and r["prompt_set"] == "test" and r["language"] == "en":
                (right if r["hit_prefix"] else wrong).append(r)
    spread = lambda recs: sorted(recs, key=lambda r: (r["prompt_index"], r["fact_id"]))[:k]
    return spread(right), spread(wrong)


def _section_samples(run_dir: Path, present: dict[str, list[dict]]) -> str:
    if not present:
        return ""
    stage = list(present)[-1]
    right, wrong = _samples(run_dir, stage)
    out = [f"<h2>Sample generations ({_e(stage)}, held-out facts, test prompts)</h2>"]
    for title, recs in (("right", right), ("wrong", wrong)):
        out.append(f"<h3>{title} ({len(recs)} shown)</h3>")
        out.append(_table(["fact", "prompt", "gold", "generation"],
                          [[r["fact_id"], r["prompt"], r["gold"], r["generation"]] for r in recs], cls="text")
                   if recs else "<p>none</p>")
    return "\n".join(out)


# ---------------------------------------------------------------- the page


def build_report(run_dir: str | Path) -> Path:
    """Write run_dir/report/report.html (figures embedded, also saved under report/figures) and return its path."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    out_dir = run_dir / "report"
    figures_dir = out_dir / "figures"
    present = stage_summaries(run_dir)
    shared = _cfg(config, "data.subjects") == "shared"
    missing = missing_stages(run_dir, config, present)
    sections = [
        _section_title(config, run_dir),
        f'<p class="{"warn" if any("not finished" in m for m in missing) else "meta"}">{_e(_missing_line(missing))}</p>',
        _section_data(run_dir),
        _section_training(run_dir, figures_dir),
        _section_accuracy(present, figures_dir, shared) or "<h2>Accuracy by stage</h2><p>No evaluation has finished yet.</p>",
        _section_unrelated(present),
        _section_forms(present),
        _section_languages(present, figures_dir),
        _section_other_object(present) if shared and present else "",
        _section_samples(run_dir, present),
        probe_section_html(run_dir),  # empty until `rote probe RUN` has written probe/geometry.json
    ]
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rote report: {_e(_cfg(config, 'name', run_dir.name))}</title>",
        f"<style>{CSS}</style></head><body>",
        *[s for s in sections if s],
        "</body></html>",
    ])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
