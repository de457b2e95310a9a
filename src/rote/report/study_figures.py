"""A study's figures, from its summary.json only (no torch): a line per series, a heat map of two
axes, grouped bars, or the trade-off of a metric against the damage measures; the paper's numbers
drawn beside ours where the study file gives them.
"""
from __future__ import annotations

from matplotlib.figure import Figure

from rote.report.figures import new_figure

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
PAPER = "paper (notes)"  # docs/paper-numbers.md: the paper's numbers come from third-party summaries


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in labels]
    except ValueError:
        return None


def _cell(summary: dict, labels: dict) -> dict | None:
    for c in summary["cells"]:
        if c["labels"] == labels:
            return c
    return None


def _stat(cell: dict | None, metric: str) -> tuple[float | None, float | None, float | None]:
    """(mean, std, paper) of one cell x metric; std is None when there is no spread to show (one seed)."""
    s = (cell or {}).get("metrics", {}).get(metric) or {}
    return s.get("mean"), s.get("std"), s.get("paper")


def _bar(sd: float | None) -> float:
    """An error bar's half-length: NaN, which matplotlib leaves undrawn, where there is no spread (one
    seed): a bar of length 0 would claim a measured spread of 0."""
    return float("nan") if sd is None else sd


def _title(name: str, meta: dict) -> str:
    return f"{name}" + (" (lower is better)" if meta.get("lower_is_better") else "")


# ---------------------------------------------------------------- figures


def line_figure(summary: dict) -> Figure:
    """One panel per metric: x = the first axis, one line per value of the second, error bars = std over seeds."""
    axes = list(summary["axes"])
    x_axis, x_labels = axes[0], summary["axes"][axes[0]]
    series = summary["axes"][axes[1]] if len(axes) > 1 else [None]
    xs = _numeric(x_labels) or list(range(len(x_labels)))
    metrics = summary["metrics"]
    fig = new_figure(min(4.2 * len(metrics), 16), 3.4)
    panels = fig.subplots(1, len(metrics), squeeze=False)[0]
    # Lines with equal values would hide each other: each series is nudged sideways a little.
    nudge = 0.012 * (max(xs) - min(xs) or 1)
    for ax, (name, meta) in zip(panels, metrics.items()):
        for i, s in enumerate(series):
            color = COLORS[i % len(COLORS)]
            points = []
            shift = (i - (len(series) - 1) / 2) * nudge
            for x, label in zip([x + shift for x in xs], x_labels):
                labels = {x_axis: label} | ({axes[1]: s} if s is not None else {})
                points.append((x, *_stat(_cell(summary, labels), name)))
            ours = [(x, m, sd) for x, m, sd, _ in points if m is not None]
            name_s = f"{axes[1]}={s}" if s is not None else "ours"
            if ours:
                ax.errorbar([p[0] for p in ours], [p[1] for p in ours], yerr=[_bar(p[2]) for p in ours], color=color,
                            marker="o", ms=4, capsize=3, lw=1.4, label=name_s)
            paper = [(x, p) for x, _, _, p in points if p is not None]
            if paper:
                ax.plot([p[0] for p in paper], [p[1] for p in paper], color=color, ls="--", marker="x", lw=0.9,
                        alpha=0.8, label=f"{PAPER}" + (f", {name_s}" if s is not None else ""))
        ax.set_xticks(xs, x_labels)
        ax.set_xlabel(x_axis)
        ax.set_ylim(-0.03, 1.05)
        ax.set_title(_title(name, meta), fontsize=10)
        ax.grid(color="#eeeeee")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False, loc="best")
    panels[0].set_ylabel("mean over seeds ± std")
    return fig


def heatmap_figure(summary: dict) -> Figure:
    """One panel per metric: rows = the first axis, columns = the second; each square says mean ± std."""
    (a0, rows), (a1, cols) = list(summary["axes"].items())[:2]
    metrics = summary["metrics"]
    fig = new_figure(min(max(3.2, 0.9 * len(cols) + 1.6) * len(metrics), 18), max(2.8, 0.6 * len(rows) + 1.4))
    panels = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, meta) in zip(panels, metrics.items()):
        grid = [[_stat(_cell(summary, {a0: r, a1: c}), name) for c in cols] for r in rows]
        values = [[m if m is not None else float("nan") for m, _, _ in row] for row in grid]
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis_r" if meta.get("lower_is_better") else "viridis",
                          aspect="auto")
        for i, row in enumerate(grid):
            for j, (m, sd, paper) in enumerate(row):
                text = "n/a" if m is None else f"{m:.2f}\n" + ("no spread" if sd is None else f"±{sd:.2f}")
                if paper is not None:
                    text += f"\npaper {paper:.2f}"
                dark = m is not None and (m > 0.55) != bool(meta.get("lower_is_better"))
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="black" if dark else "white")
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(a1)
        ax.set_ylabel(a0)
        ax.set_title(_title(name, meta), fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def bars_figure(summary: dict) -> Figure:
    """Grouped bars with std error bars: one group per cell, one bar per metric (one cell: one bar per metric)."""
    metrics, cells = summary["metrics"], summary["cells"]
    single = len(cells) == 1
    one_axis = len(summary["axes"]) == 1
    groups = list(metrics) if single else [next(iter(c["labels"].values())) if one_axis else c["cell"] for c in cells]
    series = [None] if single else list(metrics)
    fig = new_figure(min(max(5.0, 0.35 * len(groups) * len(series) + 2.5), 18), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(series)
    paper_label = PAPER
    for i, metric in enumerate(series):
        for j, group in enumerate(groups):
            cell, name = (cells[0], group) if single else (cells[j], metric)
            mean, sd, paper = _stat(cell, name)
            x = j + (i - (len(series) - 1) / 2) * width
            color = COLORS[(j if single else i) % len(COLORS)]
            label = None if single or j else _title(metric, metrics[metric])
            if mean is not None:
                ax.bar(x, mean, width * 0.92, yerr=_bar(sd), capsize=2, color=color, label=label,
                       error_kw={"elinewidth": 0.8})
            if paper is not None:
                ax.plot([x], [paper], marker="x", color="black", ms=6, ls="none", label=paper_label)
                paper_label = None
    # Slanted labels when the longest would not fit under its group (~0.065 in a character at size 8).
    crowded = max(len(g) for g in groups) * 0.065 > 0.8 * fig.get_figwidth() / len(groups)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if crowded else 0, ha="right" if crowded else "center",
                  fontsize=8)
    if one_axis and not single:
        ax.set_xlabel(next(iter(summary["axes"])))
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean over seeds ± std")
    ax.grid(axis="y", color="#eeeeee")
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, ncol=min(len(series) + 1, 4), loc="upper left")
    return fig


TRADEOFF_AXES = (("damage.phase2.locality", "locality after phase 2 (base-correct probes still correct)", False),
                 ("damage.phase2.perplexity_ratio", "perplexity after phase 2 / base (lower is better)", True))


def tradeoff_figure(summary: dict) -> Figure:
    """What a cell buys and what it costs: the study's first metric (y) against each damage measure
    after phase 2 (x: locality; perplexity ratio), mean ± std over seeds on both axes; each point
    is named with its cell and its training time (rote.study.collect.training_seconds)."""
    metric = next(iter(summary["metrics"]))
    fig = new_figure(11, 4.4)
    panels = fig.subplots(1, len(TRADEOFF_AXES), squeeze=False)[0]
    for ax, (damage, label, log) in zip(panels, TRADEOFF_AXES):
        for i, c in enumerate(summary["cells"]):
            y, y_sd, _ = _stat(c, metric)
            x = (c.get("damage") or {}).get(damage) or {}
            if y is None or x.get("mean") is None:
                continue
            color = COLORS[i % len(COLORS)]
            ax.errorbar([x["mean"]], [y], xerr=[_bar(x.get("std"))], yerr=[_bar(y_sd)], color=color, marker="o", ms=5,
                        capsize=2, lw=1)
            seconds = c.get("training_seconds")
            ax.annotate(c["cell"] + (f" ({seconds / 60:.0f} min)" if seconds else ""), (x["mean"], y), fontsize=7,
                        color=color, xytext=(4, 3), textcoords="offset points")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel(_title(metric, summary["metrics"][metric]), fontsize=8)
        ax.grid(color="#eeeeee")
    fig.suptitle("trade-off per cell (mean ± std over seeds; training time in parentheses)", fontsize=9)
    return fig


FIGURES = {"line": line_figure, "heatmap": heatmap_figure, "bars": bars_figure, "tradeoff": tradeoff_figure}
