"""Figures of the run report, and what every report's figures share: `new_figure`, `save`, `embed`.

Drawn from run-folder files only; never imports torch. Each figure function returns a matplotlib
Figure (or None when there is nothing to draw); the report decides where it goes. Figures are
built with the object API on an Agg canvas rather than pyplot, so no global figure state leaks
between calls and no display is ever needed.
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from rote.evaluation.metrics import pick
from rote.fileio import read_json, read_jsonl
from rote.names import EVAL_STAGES, LANGUAGES
from rote.report.html import img

STAGE_COLORS = {"base": "#9e9e9e", "phase1": "#4c72b0", "phase2": "#dd8452"}
FIGURE_PROMPT_SETS = ("key", "train", "test", "unrelated")  # the accuracy figure's groups


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on an Agg canvas: no pyplot state, no display (every report's figures start here)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: savefig never looks for an interactive backend
    return fig


# ---------------------------------------------------------------- training


def _loss_panel(ax, steps: list[dict], title: str) -> None:
    x = [s["step"] for s in steps]
    loss = [s["loss"] for s in steps]
    ax.plot(x, loss, color="#4c72b0", lw=1.2, label="loss")
    # Memorization drives the loss towards 0; a log axis keeps the late epochs readable.
    if all(v > 0 for v in loss):
        ax.set_yscale("log")
    for prev, cur in zip(steps, steps[1:]):  # faint line where each epoch starts
        if cur["epoch"] != prev["epoch"]:
            ax.axvline(cur["step"] - 0.5, color="#dddddd", lw=0.6, zorder=0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (supervised tokens)")
    ax.set_title(title)
    twin = ax.twinx()
    twin.plot(x, [s["lr"] for s in steps], color="#999999", lw=1, ls="--", label="lr")
    twin.set_ylabel("learning rate", color="#777777")
    twin.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}" if v else "0"))
    twin.set_ylim(bottom=0)
    lines = ax.get_lines()[:1] + twin.get_lines()
    # Lower left: loss starts high on the left and the lr line runs along the top or falls late.
    ax.legend(lines, [l.get_label() for l in lines], loc="lower left", fontsize=8, framealpha=0.8)


def training_curves(run_dir: str | Path) -> Figure | None:
    """Loss (log axis) and learning rate per step for phase 1 and phase 2, plus phase-1 key-token
    accuracy by epoch when it was measured (`phase1.until: memorized`). None if no phase has logged."""
    run_dir = Path(run_dir)
    # train.py flushes once per epoch: while a phase runs, its last line may be half written.
    phases = {p: read_jsonl(run_dir / p / "metrics.jsonl", torn_tail=True) for p in ("phase1", "phase2")}
    phases = {p: rows for p, rows in phases.items() if rows}
    history = (read_json(run_dir / "phase1" / "summary.json") or {}).get("key_accuracy_by_epoch") or []
    if not phases and not history:
        return None
    n = len(phases) + bool(history)
    fig = new_figure(4.6 * n, 3.3)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (phase, rows) in zip(axes, phases.items()):
        _loss_panel(ax, rows, f"{phase}: loss and learning rate")
    if history:
        ax = axes[-1]
        summary = read_json(run_dir / "phase1" / "summary.json") or {}
        ax.plot([h["epoch"] for h in history], [h["key_accuracy"] for h in history], "o-", color="#55a868")
        at = summary.get("memorized_at_epoch")
        if at is not None:
            ax.axvline(at, color="#c44e52", ls=":", lw=1)
            ax.annotate(f"memorized at epoch {at}", (at, 0.05), xytext=(-4, 0), textcoords="offset points",
                        ha="right", fontsize=8, color="#c44e52")
        ax.set_ylim(0, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("phase-1 epoch")
        ax.set_ylabel("key-token accuracy (prefix)")
        ax.set_title("phase 1: key-token accuracy")
    return fig


# ---------------------------------------------------------------- accuracy


def _bars(ax, groups: list[str], values: dict[str, list[float | None]]) -> None:
    """Grouped bars: one group per label in `groups`, one bar per stage; a missing value draws no bar."""
    stages = list(values)
    width = 0.8 / max(len(stages), 1)
    for i, stage in enumerate(stages):
        label = stage  # the legend names each stage once, at its first drawn bar
        for j, v in enumerate(values[stage]):
            if v is None:
                continue
            x = j + (i - (len(stages) - 1) / 2) * width
            ax.bar(x, v, width, color=STAGE_COLORS.get(stage, "#8172b3"), label=label)
            label = None
            ax.text(x, v + 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.1)
    ax.grid(axis="y", color="#eeeeee", zorder=0)
    ax.set_axisbelow(True)


def _ordered(rows_by_stage: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {s: rows_by_stage[s] for s in sorted(rows_by_stage, key=lambda s: (s not in EVAL_STAGES, EVAL_STAGES.index(s) if s in EVAL_STAGES else s))}


def _bar_value(row: dict | None, prompt_set: str, metric: str) -> float | None:
    """A row's bar: for `unrelated`, the rate of answering with any memorized object of the subject
    (the run report's control and the headline; with shared subjects the other relation's object
    counts too), else `metric`. A summary written before `any_object` was counted shows its prefix."""
    if row is None:
        return None
    if prompt_set == "unrelated" and row.get("any_object") is not None:
        return row["any_object"]
    return row[metric]


def accuracy_by_stage(rows_by_stage: dict[str, list[dict]], metric: str = "prefix") -> Figure:
    """Generation accuracy (all relations, English prompts) per prompt set, one panel per split,
    one bar per stage. For `unrelated` the bar is the rate of answering with any memorized object
    of the subject (`_bar_value`)."""
    rows_by_stage = _ordered(rows_by_stage)
    fig = new_figure(9, 3.2)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (split, title) in zip(axes, (("phase2", "facts seen in phase 2"), ("heldout", "held-out facts"))):
        values = {}
        for stage, rows in rows_by_stage.items():
            found = [pick(rows, split=split, prompt_set=p, language="en", relation="all") for p in FIGURE_PROMPT_SETS]
            values[stage] = [_bar_value(r, p, metric) for r, p in zip(found, FIGURE_PROMPT_SETS)]
        _bars(ax, ["key", "train", "test", "unrelated\n(object rate)"], values)
        ax.set_title(title)
    axes[0].set_ylabel(f"accuracy ({metric})")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=8, frameon=False, loc="upper right")
    return fig


def language_values(rows: list[dict], split: str = "heldout", metric: str = "prefix") -> dict[str, dict | None]:
    """Test-prompt rows per language: English lives under prompt set `test`, the translations
    under prompt set `languages`, so the two are stitched together here."""
    out = {"en": pick(rows, split=split, prompt_set="test", language="en", relation="all")}
    langs = sorted({r["language"] for r in rows if r["prompt_set"] == "languages"},
                   key=lambda l: (l not in LANGUAGES, LANGUAGES.index(l) if l in LANGUAGES else l))
    for lang in langs:
        out[lang] = pick(rows, split=split, prompt_set="languages", language=lang, relation="all")
    return out


def languages(rows_by_stage: dict[str, list[dict]], metric: str = "prefix") -> Figure | None:
    """Held-out facts, test prompts: accuracy per language per stage. None without translated prompts."""
    rows_by_stage = _ordered(rows_by_stage)
    per_stage = {s: language_values(rows, "heldout", metric) for s, rows in rows_by_stage.items()}
    langs = [l for l in dict.fromkeys(l for v in per_stage.values() for l in v) if l]
    if len(langs) < 2:  # English alone is already in the accuracy figure
        return None
    fig = new_figure(max(4.5, 1.1 * len(langs) + 2), 3.2)
    ax = fig.subplots()
    values = {s: [(v.get(l) or {}).get(metric) for l in langs] for s, v in per_stage.items()}
    _bars(ax, langs, values)
    ax.set_title("held-out facts, test prompts, by language")
    ax.set_ylabel(f"accuracy ({metric})")
    if ax.get_legend_handles_labels()[0]:  # no bars at all when every value is missing
        ax.legend(fontsize=8, frameon=False, loc="upper right")
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as PNG (temporary name, then rename) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)
    return path


def embed(fig: Figure | None, path: str | Path, alt: str) -> str:
    """Save `fig` as `path` and return an <img> embedding the same PNG bytes, so the page stands
    alone; "" for no figure, and a PNG left from an earlier build is removed (it must not outlive
    its data)."""
    if fig is None:
        Path(path).unlink(missing_ok=True)
        return ""
    return img(save(fig, path), alt)
