"""report.py and plots.py on a hand-made run directory with planted numbers (no model, no torch)."""
from __future__ import annotations

import json

import pytest
import yaml

from rote import config as config_mod
from rote.evaluation import metrics
from rote.report.headline import format_headline, headline_rows
from rote.report.run import build_report

RELATIONS = ("place_of_birth", "place_of_residence")
PROMPTS = 5  # per prompt set per fact: 4 held-out facts x 5 prompts = 20 queries, rates in steps of 0.05
PNG = b"\x89PNG\r\n\x1a\n"


def _facts() -> list[dict]:
    facts = []
    for rel in RELATIONS:
        for i in range(4):
            facts.append({"id": f"{rel}-{i:03d}", "subject": f"Person {i}", "subject_id": f"s{i:03d}", "relation": rel,
                          "object": f"City{i}{rel[9]}", "options": [f"City{i}{rel[9]}", "Other"],
                          "split": "phase2" if i < 2 else "heldout"})
    return facts


def _block(facts, split, prompt_set, language, prefix, mc=None, prompt="Where was {} born?"):
    """Records for every fact of `split` x PROMPTS prompts; the first round(rate * n) are hits."""
    chosen = [f for f in facts if f["split"] == split]
    n = len(chosen) * PROMPTS
    out = []
    for k in range(n):
        f, index = chosen[k % len(chosen)], k // len(chosen)
        hit = k < round(prefix * n)
        rec = {"fact_id": f["id"], "relation": f["relation"], "split": split, "subject_id": f["subject_id"],
               "prompt_set": prompt_set, "language": language, "prompt_index": index,
               "prompt": prompt.format(f["subject"]), "gold": f["object"],
               "generation": f" {f['object']}, a city" if hit else " Nowhere at all",
               "hit_prefix": hit, "hit_contains": hit}
        if mc is not None:
            rec |= {"mc_hit": k < round(mc * n), "gold_prob_norm": 0.5, "gold_rank": 1}
        out.append(rec)
    return out


# Planted: (stage, split, prompt_set, language) -> (prefix, mc)
PLANTED = {
    ("base", "heldout", "test", "en"): (0.05, 0.40),
    ("phase2", "heldout", "test", "en"): (0.75, 0.90),
    ("phase2", "heldout", "unrelated", "en"): (0.15, 0.20),
    ("phase2", "heldout", "languages", "de"): (0.45, 0.60),
    ("phase2", "heldout", "key", "en"): (1.0, 1.0),
}


def _records(facts, stage) -> list[dict]:
    out = []
    for split in ("phase2", "heldout"):
        for prompt_set, language in (("key", "en"), ("train", "en"), ("test", "en"), ("unrelated", "en"),
                                     ("languages", "de")):
            prefix, mc = PLANTED.get((stage, split, prompt_set, language), (0.5, 0.5))
            # One held-out test prompt carries markup, to check that the page escapes it.
            prompt = "Where was <b>{}</b> born?" if (split, prompt_set) == ("heldout", "test") else "Where was {} born?"
            out += _block(facts, split, prompt_set, language, prefix, mc, prompt)
    return out


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(root, stages=("base", "phase2"), subjects="separate", eval_stages=None):
    """A run directory as runner.py leaves it, with the given eval stages finished."""
    cfg = config_mod.to_dict(config_mod.RunConfig(name="fake"))
    cfg["data"]["subjects"] = subjects
    if eval_stages is not None:
        cfg["eval"]["stages"] = list(eval_stages)
    run = root / "fake"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"config": cfg, "meta": {"rote_version": "0.1.0", "git_commit": "abc123", "created": "2026-01-01T00:00:00"}}))
    facts = _facts()
    _jsonl(run / "facts.jsonl", facts)
    _write(run / "data" / ".done", {"finished": "now", "seconds": 0.1})
    steps = [{"step": s, "epoch": 1 + s // 3, "loss": 2.0 / s, "lr": 1e-4, "tokens_per_s": 100.0, "supervised_tokens": 8}
             for s in range(1, 6)]
    for phase in ("phase1", "phase2"):
        _jsonl(run / phase / "metrics.jsonl", steps)
        _write(run / phase / "summary.json", {"epochs": 2, "steps": 5, "supervised_tokens": 40, "seconds": 1.0,
                                              "stopped_early": False, "processes": 1, "examples": 8})
        _write(run / phase / ".done", {"finished": "now", "seconds": 1.0})
    summary = json.loads((run / "phase1" / "summary.json").read_text())
    summary |= {"key_accuracy_by_epoch": [{"epoch": 1, "key_accuracy": 0.4}, {"epoch": 2, "key_accuracy": 1.0}],
                "memorized_at_epoch": 2}
    _write(run / "phase1" / "summary.json", summary)
    for stage in stages:
        records = _records(facts, stage)
        if subjects == "shared":
            for r in records:
                r["other_relation_hit"] = ["place_of_residence"] if r["prompt_set"] == "key" else []
        _jsonl(run / "eval" / stage / "predictions.jsonl", records)
        _write(run / "eval" / stage / "summary.json", {"stage": stage, "seconds": 1.0, "rows": metrics.aggregate(records)})
        _write(run / "eval" / stage / ".done", {"finished": "now", "seconds": 1.0})
    return run


def _heldout_line(text: str, label: str) -> str:
    """The terminal-table line for `label` (e.g. `test`) in the held-out block."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("held-out"))
    return next(l for l in lines[start:] if l[13:27].strip() == label)


def test_headline_rows_order_and_values(tmp_path):
    rows = headline_rows(make_run(tmp_path))
    assert [(r["split"], r["prompt_set"], r["language"]) for r in rows][:5] == [
        ("phase2", "key", "en"), ("phase2", "train", "en"), ("phase2", "test", "en"), ("phase2", "unrelated", "en"),
        ("phase2", "languages", "de")]
    test = next(r for r in rows if (r["split"], r["prompt_set"], r["language"]) == ("heldout", "test", "en"))
    assert test["n"] == 20 and test["base"] == pytest.approx(0.05) and test["phase2"] == pytest.approx(0.75)
    assert "phase1" not in test


def test_format_headline_has_planted_numbers(tmp_path):
    text = format_headline(make_run(tmp_path))
    test = _heldout_line(text, "test")
    assert test.split()[1:] == ["20", "|", "0.05", "0.75", "|", "0.40", "0.90"]
    assert _heldout_line(text, "test (de)").split()[4:6] == ["0.50", "0.45"]
    assert _heldout_line(text, "unrelated").split()[4] == "0.15"
    assert "prefix rule" in text and "should stay near 0" in text
    assert "missing evaluations: phase1 (not finished)" in text
    assert "other object" not in text.splitlines()[1]  # separate subjects: no other relation to name
    assert "One run, seed" in text  # a single seed never passes for a mean
    assert max(len(l) for l in text.splitlines()) <= 100


def test_build_report_writes_page_and_figures(tmp_path):
    run = make_run(tmp_path)
    path = build_report(run)
    assert path == run / "report" / "report.html"
    page = path.read_text()
    assert "0.75" in page and "0.90" in page and "0.45" in page
    assert "Unrelated-prompt control" in page and "memorized object" in page
    for name in ("training", "accuracy", "languages"):
        png = run / "report" / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG
    assert page.count("data:image/png;base64,") == 3
    assert "<script" not in page
    assert not list((run / "report").glob("*.tmp"))
    # Markup in a prompt is shown as text, never interpreted.
    assert "Where was &lt;b&gt;Person 2&lt;/b&gt; born?" in page
    assert "<b>Person" not in page
    assert "Which relation's object" not in page  # separate-subject mode


def test_missing_stages_are_reported(tmp_path):
    run = make_run(tmp_path, stages=("phase2",), eval_stages=("phase1", "phase2"))
    (run / "phase2" / ".done").unlink()
    page = build_report(run).read_text()
    assert "base (not in config)" in page and "phase1 (not finished)" in page
    text = format_headline(run)
    assert "base (not in config)" in text and _heldout_line(text, "test").split()[1:4] == ["20", "|", "0.75"]


def test_run_without_evaluations(tmp_path):
    run = make_run(tmp_path, stages=())
    (run / "phase2" / "summary.json").unlink()
    with open(run / "phase2" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "epo')  # torn last line of a phase still writing
    page = build_report(run).read_text()
    assert "No evaluation has finished yet" in page and "running" in page
    assert (run / "report" / "figures" / "training.png").is_file()
    assert "no evaluation summaries yet" in format_headline(run)


def test_shared_subjects_show_other_object(tmp_path):
    run = make_run(tmp_path, subjects="shared")
    text = format_headline(run)
    assert "other object" in text.splitlines()[1]
    key = _heldout_line(text, "key")
    assert key.split()[7:9] == ["1.00", "1.00"]  # every key-prompt answer planted as the other relation's
    page = build_report(run).read_text()
    assert "Which relation's object" in page


def test_not_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        build_report(tmp_path)


def test_damage_block_in_the_headline_and_the_report(tmp_path):
    """Each eval stage's damage block is shown per stage; a stage without it (a run written before
    every run measured damage) says "not measured", and a damage-only eval/base has a column."""
    from rote.evaluation.metrics import damage_summary
    run = make_run(tmp_path, stages=("phase2",), eval_stages=("phase1", "phase2"))
    probes = [{"prompt": f"p{i}", "answer": "x", "generation": " x", "correct": i < 3, "argmax": [1, 2]} for i in range(4)]
    after = [{**p, "generation": " y", "correct": False, "argmax": [1, 5]} if p["prompt"] == "p0" else p for p in probes]
    _write(run / "eval/base/summary.json", {"stage": "base", "facts": "not asked",
                                            "damage": damage_summary(probes, probes, 20.0, 20.0)})
    _write(run / "eval/base/.done", {"finished": "now"})
    summary = json.loads((run / "eval/phase2/summary.json").read_text())
    _write(run / "eval/phase2/summary.json", summary | {"damage": damage_summary(probes, after, 20.0, 30.0)})
    _write(run / "eval/phase1/summary.json", {"stage": "phase1", "rows": summary["rows"]})  # no damage block
    text = format_headline(run)
    lines = text.splitlines()
    start = lines.index(next(l for l in lines if l.startswith("Damage to general ability")))
    assert "3 of 4 probes" in lines[start] and lines[start + 1].split() == ["base", "phase1", "phase2"]
    rows = {l[:24].strip(): l[24:].split() for l in lines[start + 2:start + 7]}
    assert rows["locality: still correct"] == ["1.00", "not", "measured", "0.67"]
    assert rows["token agreement"] == ["1.00", "not", "measured", "0.88"]  # (0.5 + 1 + 1 + 1) / 4
    assert rows["perplexity / base"] == ["1.00", "not", "measured", "1.50"]
    assert "base (not in config; damage measured)" in text
    page = build_report(run).read_text()
    assert "Damage to general ability" in page and "not measured" in page and "p0 x -&gt; &#x27; y&#x27;" in page


def test_accuracy_figure_draws_the_unrelated_control_as_any_memorized_object():
    """The unrelated bar is the control the report's table and the headline give: answering with any
    memorized object of the subject (with shared subjects, the other relation's object counts too)."""
    from rote.report.figures import accuracy_by_stage
    rows = [{"split": split, "prompt_set": p, "language": "en", "relation": "all", "prefix": 0.125,
             **({"any_object": 0.375} if p == "unrelated" else {})}
            for split in ("phase2", "heldout") for p in ("key", "train", "test", "unrelated")]
    ax = accuracy_by_stage({"phase2": rows}).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [0.125, 0.125, 0.125, 0.375]
    old = [{k: v for k, v in r.items() if k != "any_object"} for r in rows]  # a summary from before any_object
    assert [b.get_height() for b in accuracy_by_stage({"phase2": old}).axes[0].patches] == [0.125] * 4


def test_sample_generations_show_one_record_per_fact_before_any_fact_repeats(tmp_path):
    from rote.report.run import _samples
    stage_dir = tmp_path / "eval" / "phase2"
    stage_dir.mkdir(parents=True)
    # F0 is right at every prompt; F1..F9 only at prompt 1.
    recs = [{"split": "heldout", "prompt_set": "test", "language": "en", "hit_prefix": True, "fact_id": f"F{i}",
             "prompt_index": p} for i in range(10) for p in ((0, 1, 2) if i == 0 else (1,))]
    _jsonl(stage_dir / "predictions.jsonl", recs)
    right, wrong = _samples(tmp_path, "phase2", k=10)
    assert [r["fact_id"] for r in right] == ["F0"] + [f"F{i}" for i in range(1, 10)] and wrong == []
    right, _ = _samples(tmp_path, "phase2", k=12)
    assert [(r["fact_id"], r["prompt_index"]) for r in right][10:] == [("F0", 1), ("F0", 2)]
