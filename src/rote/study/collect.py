"""A study's numbers: each cell x seed's metrics read from its run folders, the mean and spread over
seeds, summary.csv and summary.json. Pure: reads and writes files only.

Besides the study file's metrics, every cell gets the damage to general ability that every run
measures (each eval stage's `damage` block, rote.eval_stage.run_eval): DAMAGE_METRICS at phase 1 and
phase 2 (the base model is their reference), named `damage.<stage>.<measure>`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
import time
from pathlib import Path

import yaml

from rote import config as config_mod
from rote.data.facts import read_facts
from rote.errors import RunError
from rote.evaluation.metrics import aggregate, metric_value, pick
from rote.fileio import is_done, read_json, read_jsonl, read_seconds, write_json, write_text
from rote.names import CONFIG_FILE, PREDICTIONS_FILE, SUMMARY_FILE, eval_dir
from rote.study.plan import Plan, Run


def _stage_rows(plan: Plan, run: Run, stage: str, cache: dict) -> list[dict] | None:
    """Summary rows of `stage` for this cell x seed, or None while they do not exist."""
    run_dir = run.cfg.run_dir
    if stage == "phase2" or run.phase1 is None:
        summary = read_json(run_dir / "eval" / stage / "summary.json") if is_done(run_dir, f"eval/{stage}") else None
        return summary["rows"] if summary else None
    p1_dir = plan.runs_dir / run.phase1
    if not is_done(p1_dir, f"eval/{stage}") or not (run_dir / "facts.jsonl").is_file():
        return None
    key = (run.phase1, stage, run.cfg.data.phase2_facts, run.cfg.phase2.n_prompts)
    if key not in cache:
        if (run.phase1, stage) not in cache:
            cache[run.phase1, stage] = read_jsonl(p1_dir / "eval" / stage / PREDICTIONS_FILE)
        split = {f.id: f.split for f in read_facts(run_dir / "facts.jsonl")}
        n_prompts = run.cfg.phase2.n_prompts  # the `train` set: the prompts this cell's phase 2 trains on
        records = [r | {"split": split[r["fact_id"]]} for r in cache[run.phase1, stage]
                   if r["prompt_set"] != "train" or r["prompt_index"] < n_prompts]
        cache[key] = aggregate(records)
    return cache[key]


# Damage measures a study reports for every cell: name -> key of an eval stage's damage block.
DAMAGE_METRICS = {"locality": "still_correct", "token_agreement": "token_agreement",
                  "perplexity_ratio": "perplexity_ratio", "gold_twice": "gold_twice", "clean": "clean",
                  "entropy_ratio": "entropy_ratio"}  # the last three: fluency (rote.evaluation.fluency)
DAMAGE_STAGES = ("phase1", "phase2")  # the base model is the reference: 1.00 by definition


def damage_names() -> list[str]:
    """The damage metrics' names, `damage.<stage>.<measure>`, in stage then measure order."""
    return [f"damage.{stage}.{measure}" for stage in DAMAGE_STAGES for measure in DAMAGE_METRICS]


def _damage(plan: Plan, run: Run, stage: str) -> dict | None:
    """The damage block of `stage` for this cell x seed: phase 1's from the run that trained it
    (shared or its own), phase 2's from the cell's run; None while missing or not measured."""
    folder = _phase1_dir(plan, run) if stage == "phase1" else run.cfg.run_dir
    if not is_done(folder, eval_dir(stage)):
        return None
    return (read_json(folder / eval_dir(stage) / SUMMARY_FILE) or {}).get("damage")


# Where a run lives, not how it was trained: a study folder moved elsewhere still reads its runs.
_LOCATIONS = (("out_dir",), ("phase2", "checkpoint"))


def _settings(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg))
    for path in _LOCATIONS:
        parent = cfg
        for key in path[:-1]:
            parent = parent.get(key) or {}
        parent.pop(path[-1], None)
    return cfg


def stale_runs(plan: Plan) -> dict[str, list[str]]:
    """The run folders (cells' and shared phase-1 runs') trained with settings other than the plan's,
    as `rote study --report-only` after an edit of the study file or another --set finds them:
    folder name -> what differs. Their numbers are left out of the summary, never put under the
    new settings. A folder without a config (not started) is not stale, only missing."""
    planned = {run.cfg.name: run.cfg for run in plan.runs} | dict(plan.phase1)
    out = {}
    for name, cfg in planned.items():
        folder = plan.runs_dir / name
        if not (folder / CONFIG_FILE).is_file():
            continue
        before = _stored_settings(folder)
        if before is not None and (diff := config_mod.differences(_settings(before), _settings(config_mod.to_dict(cfg)))):
            out[name] = diff
    return out


def _stored_settings(folder: Path) -> dict | None:
    """The resolved config a run folder was trained with, as today's keys. A run written by an earlier
    rote whose config today's checks refuse (a retired key at another value) is read as its arm
    reads it; None when even that fails (such a run is not judged, as before stale runs existed)."""
    try:
        return config_mod.to_dict(config_mod.read_run_config(folder))
    except (config_mod.ConfigError, RunError):
        pass
    try:
        raw = (yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8")) or {}).get("config") or {}
        tree, _ = config_mod.drop_unread(config_mod.upgrade(raw), source=str(folder))
        return config_mod.to_dict(config_mod.from_dict(tree, source=str(folder)))
    except (config_mod.ConfigError, OSError, yaml.YAMLError, AttributeError):
        return None


def collect(plan: Plan, stale: dict[str, list[str]] | None = None) -> list[dict]:
    """One row per cell x seed x metric: {cell, seed, labels, metric, value (None while missing)};
    the study's metrics, then the damage metrics (damage_names). A cell x seed whose run or shared
    phase-1 run is in `stale` (default: stale_runs) has no values."""
    stale = stale_runs(plan) if stale is None else stale
    cache: dict = {}
    rows = []
    for run in plan.runs:
        row = {"cell": run.cell.id, "seed": run.seed, "labels": run.cell.labels}
        if run.cfg.name in stale or run.phase1 in stale:
            rows += [row | {"metric": name, "value": None} for name in [m.name for m in plan.study.metrics] + damage_names()]
            continue
        for m in plan.study.metrics:
            stage_rows = _stage_rows(plan, run, m.stage, cache)
            found = pick(stage_rows, split=m.split, prompt_set=m.prompt_set, language=m.language,
                         relation=m.relation, form=m.form) if stage_rows else None
            rows.append(row | {"metric": m.name, "value": metric_value(found, m.metric) if found else None})
        for stage in DAMAGE_STAGES:
            damage = _damage(plan, run, stage) or {}
            rows += [row | {"metric": f"damage.{stage}.{measure}", "value": damage.get(key)}
                     for measure, key in DAMAGE_METRICS.items()]
    return rows


def _phase1_dir(plan: Plan, run: Run) -> Path:
    """The run folder that trained this cell x seed's phase 1: the shared phase-1 run, or its own."""
    return plan.runs_dir / run.phase1 if run.phase1 else run.cfg.run_dir


def training_tokens(plan: Plan, run: Run) -> dict | None:
    """Supervised tokens trained by this cell x seed: its phase 1 (shared or its own) and its phase 2."""
    p1_dir = _phase1_dir(plan, run)
    p1, p2 = read_json(p1_dir / "phase1" / "summary.json"), read_json(run.cfg.run_dir / "phase2" / "summary.json")
    if p1 is None or p2 is None:
        return None
    return {"phase1": p1["supervised_tokens"], "phase2": p2["supervised_tokens"],
            "total": p1["supervised_tokens"] + p2["supervised_tokens"]}


def training_seconds(plan: Plan, run: Run) -> float | None:
    """Wall-clock seconds that training this cell x seed's model took: its phase 1 (shared or its
    own; a shared one counts whole for every cell built on it) and its phase 2, anchors included.
    Runs side by side on shared cores time each other's load too: compare within one study only."""
    p1, p2 = read_seconds(_phase1_dir(plan, run) / "phase1"), read_seconds(run.cfg.run_dir / "phase2")
    return None if p1 is None or p2 is None else p1 + p2


def _stat(rows: list[dict]) -> dict:
    """Mean, sample std (n - 1) and n over the rows (seeds) that have a value, and every seed's value."""
    values = [r["value"] for r in rows if r["value"] is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": [{"seed": r["seed"], "value": r["value"]} for r in rows]}


def summarize(plan: Plan, rows: list[dict], stale: dict[str, list[str]] | None = None) -> dict:
    """Per cell x metric: mean, sample std (n - 1) and n over the seeds that have a value, and the
    paper's number; per cell x damage metric (`damage`) the same without a paper's number. Runs in
    `stale` (default: stale_runs) count nowhere, and the summary names them."""
    stale = stale_runs(plan) if stale is None else stale
    current = [r for r in plan.runs if r.cfg.name not in stale and r.phase1 not in stale]
    s = plan.study
    by = {}
    for r in rows:
        by.setdefault((r["cell"], r["metric"]), []).append(r)
    cells = []
    for cell in s.cells:
        entry = {"cell": cell.id, "labels": cell.labels, "runs": [f"runs/{cell.slug}-s{seed}" for seed in s.seeds], "metrics": {}}
        for m in s.metrics:
            entry["metrics"][m.name] = _stat(by.get((cell.id, m.name), [])) | {"paper": s.paper.get(m.name, {}).get(cell.id)}
        entry["damage"] = {name: _stat(by.get((cell.id, name), [])) for name in damage_names()}
        # What each cell cost in supervised training tokens (baselines are compared at equal cost).
        spent = [t for t in (training_tokens(plan, r) for r in current if r.cell.id == cell.id) if t]
        entry["training_tokens"] = {k: statistics.fmean(t[k] for t in spent) for k in ("phase1", "phase2", "total")} \
            if spent else None
        seconds = [t for t in (training_seconds(plan, r) for r in current if r.cell.id == cell.id) if t is not None]
        entry["training_seconds"] = statistics.fmean(seconds) if seconds else None
        # What the cell is (rote.arms) and, for a one-phase arm, the token budget it trained to.
        runs = [r for r in plan.runs if r.cell.id == cell.id]
        entry["arm"] = runs[0].cfg.arm
        budgets = [b for b in ((read_json(_phase1_dir(plan, r) / "phase1" / SUMMARY_FILE) or {}).get("budget_from")
                               for r in runs) if b]
        entry["budget"] = budgets[0] if budgets else None
        cells.append(entry)
    finished = sum(is_done(r.cfg.run_dir, "report") for r in current)
    return {
        "study": s.name, "question": s.question, "study_file": str(s.path), "base": str(s.base),
        "set": list(s.set), "cli_set": list(s.cli_set), "seeds": list(s.seeds), "axes": {a: list(v) for a, v in s.axes.items()},
        "figure": s.figure, "paper_note": s.paper_note,
        "metrics": {m.name: dataclasses.asdict(m) | {"description": m.describe(), "lower_is_better": m.lower_is_better}
                    for m in s.metrics},
        "runs": {"total": len(plan.runs), "finished": finished, "phase1_runs": sorted(plan.phase1),
                 "stale": {name: diff[:5] for name, diff in sorted(stale.items())}},
        "cells": cells,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write_summary(plan: Plan, rows: list[dict], summary: dict) -> None:
    axes = list(plan.study.axes)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study", "cell", "seed", *axes, "metric", "value"])
    for r in rows:
        writer.writerow([plan.study.name, r["cell"], r["seed"], *[r["labels"][a] for a in axes], r["metric"],
                         "" if r["value"] is None else repr(float(r["value"]))])
    write_text(plan.dir / "summary.csv", buf.getvalue())
    write_json(plan.dir / "summary.json", summary)
    write_text(plan.dir / "study.yaml", plan.study.path.read_text(encoding="utf-8"))
