"""A study's figures, terminal table and self-contained HTML report, from `summary.json` only.

Never imports torch: `rote study` writes `<study>/summary.json` (cells x metrics with mean, std
and n over seeds, the paper's numbers where given), and everything here reads that file, so a
study's report can be rebuilt on a laptop. The "what this shows" paragraph is computed from the
numbers (best and worst cell, whether seed spreads overlap, trends along the first axis,
agreement with the paper's order); it makes no claim the numbers do not carry.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rote import plots
from rote.report import CSS

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
PAPER = "paper (notes)"  # docs/paper-numbers.md: the paper's numbers come from third-party summaries


def read_summary(study_dir: str | Path) -> dict:
    path = Path(study_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir} is not a study folder: {path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def fmt(stat: dict | None) -> str:
    """`0.62 ± 0.05 (n=3)`; one seed has no spread and says so; no value is `n/a`."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("std") is None:
        return f"{stat['mean']:.2f} (n={stat['n']}, no spread)"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f} (n={stat['n']})"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


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


def _stat(cell: dict | None, metric: str) -> tuple[float | None, float, float | None]:
    """(mean, std or 0, paper) of one cell x metric."""
    s = (cell or {}).get("metrics", {}).get(metric) or {}
    return s.get("mean"), s.get("std") or 0.0, s.get("paper")


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
    fig = _figure(min(4.2 * len(metrics), 16), 3.4)
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
                ax.errorbar([p[0] for p in ours], [p[1] for p in ours], yerr=[p[2] for p in ours], color=color,
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
    fig = _figure(min(max(3.2, 0.9 * len(cols) + 1.6) * len(metrics), 18), max(2.8, 0.6 * len(rows) + 1.4))
    panels = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, meta) in zip(panels, metrics.items()):
        grid = [[_stat(_cell(summary, {a0: r, a1: c}), name) for c in cols] for r in rows]
        values = [[m if m is not None else float("nan") for m, _, _ in row] for row in grid]
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis_r" if meta.get("lower_is_better") else "viridis",
                          aspect="auto")
        for i, row in enumerate(grid):
            for j, (m, sd, paper) in enumerate(row):
                text = "n/a" if m is None else f"{m:.2f}\n±{sd:.2f}"
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
    fig = _figure(min(max(5.0, 0.35 * len(groups) * len(series) + 2.5), 18), 3.8)
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
                ax.bar(x, mean, width * 0.92, yerr=sd, capsize=2, color=color, label=label,
                       error_kw={"elinewidth": 0.8})
            if paper is not None:
                ax.plot([x], [paper], marker="x", color="black", ms=6, ls="none", label=paper_label)
                paper_label = None
    ax.set_xticks(range(len(groups)), groups, rotation=20 if max(len(g) for g in groups) > 12 else 0, ha="right"
                  if max(len(g) for g in groups) > 12 else "center", fontsize=8)
    if one_axis and not single:
        ax.set_xlabel(next(iter(summary["axes"])))
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean over seeds ± std")
    ax.grid(axis="y", color="#eeeeee")
    ax.set_axisbelow(True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False, ncol=min(len(series) + 1, 4), loc="upper left")
    return fig


FIGURES = {"line": line_figure, "heatmap": heatmap_figure, "bars": bars_figure}


# ---------------------------------------------------------------- what the numbers show


def _shape(values: list[tuple[str, float]]) -> str:
    diffs = [b[1] - a[1] for a, b in zip(values, values[1:])]
    if all(d > 0 for d in diffs):
        return "rises"
    if all(d < 0 for d in diffs):
        return "falls"
    if all(d == 0 for d in diffs):
        return "stays"
    top = max(values, key=lambda v: v[1])
    return f"is not monotone (highest at {top[0]}) and goes"


def findings(summary: dict) -> list[str]:
    """Sentences computed from the numbers: best/worst cell on the first metric, seed-spread
    overlap, trends along the first axis, agreement with the paper's order, the controls."""
    out: list[str] = []
    metrics, cells, runs = summary["metrics"], summary["cells"], summary["runs"]
    if runs["finished"] < runs["total"]:
        out.append(f"Only {runs['finished']} of {runs['total']} runs have finished; the numbers cover those.")
    first = next(iter(metrics))
    meta = metrics[first]
    have = [(c["cell"], c["metrics"][first]) for c in cells if c["metrics"][first]["mean"] is not None]
    if not have:
        return out + [f"No run has produced a value for {first} yet."]
    sign = -1 if meta["lower_is_better"] else 1
    ranked = sorted(have, key=lambda cs: -sign * cs[1]["mean"])
    direction = ", lower is better" if meta["lower_is_better"] else ""
    if len(ranked) == 1:
        values = [(n, cells[0]["metrics"][n]) for n in metrics if cells[0]["metrics"][n]["mean"] is not None]
        order = sorted(values, key=lambda v: -v[1]["mean"])
        out.append(f"Across the metrics of the one cell, from highest to lowest: "
                   + ", ".join(f"{n} {s['mean']:.2f}" for n, s in order) + ".")
        spread = [s["std"] for _, s in values if s["std"] is not None]
        if spread:
            out.append(f"The spread across seeds (std) is {min(spread):.2f} to {max(spread):.2f}.")
    elif ranked[0][1]["mean"] == ranked[-1][1]["mean"]:
        out.append(f"On {first} ({meta['description']}{direction}), all {len(ranked)} cells score the same: "
                   f"{ranked[0][1]['mean']:.2f}.")
    else:
        (best, b), (second, s2), (worst, w) = ranked[0], ranked[1], ranked[-1]
        tied = [c for c, st in ranked[1:] if st["mean"] == b["mean"]]
        out.append(f"On {first} ({meta['description']}{direction}), the best cell is {best} at {fmt(b)}"
                   + (f" (tied with {', '.join(tied)})" if tied else "") + f"; the worst is {worst} at {fmt(w)}.")
        if tied:
            pass  # a tie is its own statement; no spread to compare
        elif b["std"] is not None and s2["std"] is not None:
            gap = sign * (b["mean"] - s2["mean"]) - (b["std"] + s2["std"])
            if gap > 0:
                out.append(f"The next best, {second} at {fmt(s2)}, is further from the best than the two spreads "
                           f"(mean ± std) reach: the ranking of the top two holds across these seeds.")
            else:
                out.append(f"The next best, {second} at {fmt(s2)}, lies within the seed spread of the best "
                           f"(their mean ± std ranges overlap): these seeds do not separate the two.")
        else:
            out.append("Cells with fewer than two seeds have no spread, so no gap can be judged against it.")
    out += _trends(summary, first)
    out += _paper_agreement(summary)
    for name, m in metrics.items():
        if name != first and m["lower_is_better"]:
            vals = [(c["cell"], c["metrics"][name]["mean"]) for c in cells if c["metrics"][name]["mean"] is not None]
            if vals:
                lo, hi = min(vals, key=lambda v: v[1]), max(vals, key=lambda v: v[1])
                what = f"{name} ({m['description']}; lower is better)"
                out.append(f"{what} ranges from {lo[1]:.2f} ({lo[0]}) to {hi[1]:.2f} ({hi[0]})." if lo[1] != hi[1]
                           else f"{what} is {lo[1]:.2f}" + (" in every cell." if len(vals) > 1 else "."))
    return out


def _trends(summary: dict, metric: str) -> list[str]:
    axes = list(summary["axes"])
    if not axes or len(summary["axes"][axes[0]]) < 2:
        return []
    x_axis, others = axes[0], axes[1:]
    series: dict[tuple, list[tuple[str, float]]] = {}
    for c in summary["cells"]:
        mean = c["metrics"][metric]["mean"]
        if mean is not None:
            series.setdefault(tuple(c["labels"][a] for a in others), []).append((c["labels"][x_axis], mean))
    order = summary["axes"][x_axis]
    out = []
    for key, values in list(series.items())[:6]:
        if len(values) < 2:
            continue
        values.sort(key=lambda v: order.index(v[0]))
        where = (" for " + ",".join(f"{a}={v}" for a, v in zip(others, key))) if others else ""
        shape = _shape(values)
        if shape == "stays":
            out.append(f"Along {x_axis}, {metric} stays at {values[0][1]:.2f}{where}.")
        else:
            out.append(f"Along {x_axis}, {metric} {shape} from {values[0][1]:.2f} ({x_axis}={values[0][0]}) "
                       f"to {values[-1][1]:.2f} ({x_axis}={values[-1][0]}){where}.")
    return out


def _paper_agreement(summary: dict) -> list[str]:
    out = []
    for name in summary["metrics"]:
        pairs = [(c["cell"], c["metrics"][name]["mean"], c["metrics"][name]["paper"]) for c in summary["cells"]
                 if c["metrics"][name]["mean"] is not None and c["metrics"][name]["paper"] is not None]
        if not pairs:
            continue
        level = sum(m - p for _, m, p in pairs) / len(pairs)
        level_text = (f"ours are on average {abs(level):.2f} {'below' if level < 0 else 'above'} the paper's, "
                      "on another model and size: compare the trend, not the level")
        if len(pairs) == 1:
            out.append(f"On {name} the paper gives one comparable cell ({pairs[0][0]}): {level_text}.")
            continue
        ordered = [(a, b) for i, a in enumerate(pairs) for b in pairs[i + 1:] if a[2] != b[2]]
        if not ordered:
            out.append(f"On {name} the paper's {len(pairs)} numbers are all equal: no order to compare; {level_text}.")
            continue
        agree = sum((a[1] - b[1]) * (a[2] - b[2]) > 0 for a, b in ordered)
        ties = sum(a[1] == b[1] for a, b in ordered)
        against = [f"{a[0]} vs {b[0]}" for a, b in ordered if (a[1] - b[1]) * (a[2] - b[2]) < 0]
        verdict = "the paper's trend holds here" if agree == len(ordered) else \
            "the paper's trend mostly holds" if agree * 4 >= 3 * len(ordered) else \
            "the paper's trend holds only in part" if agree * 2 > len(ordered) else "the paper's trend does not hold here"
        pairs_text = f"{len(ordered)} pair{'s' * (len(ordered) != 1)}"
        out.append(f"On {name}, of the {pairs_text} of cells the paper orders, ours orders {agree} the same way"
                   + (f" ({ties} tied)" if ties else "")
                   + (f" (reversed: {'; '.join(against)})" if against and len(against) <= 3 else "")
                   + f": {verdict}; {level_text}.")
    return out


# ---------------------------------------------------------------- terminal and HTML


def format_summary(summary: dict) -> str:
    """The mean ± std table for the terminal, then the findings."""
    names = list(summary["metrics"])
    width = max([len(c["cell"]) for c in summary["cells"]] + [4])
    col = max(22, *(len(n) + 2 for n in names))
    lines = [f"study {summary['study']}: {summary['question']}".rstrip(": "),
             f"{summary['runs']['finished']}/{summary['runs']['total']} runs finished; seeds {summary['seeds']}; "
             f"mean ± std over seeds",
             f"{'cell':{width}s}  " + "".join(f"{n:>{col}s}" for n in names)]
    for c in summary["cells"]:
        parts = []
        for n in names:
            s = c["metrics"][n]
            text = "n/a" if s["mean"] is None else f"{s['mean']:.2f} ± {s['std']:.2f}" if s["std"] is not None \
                else f"{s['mean']:.2f} (1 seed)"
            if s["paper"] is not None:
                text += f" [paper {s['paper']:.2f}]"
            parts.append(f" {text:>{col}s}")
        parts.append(f"   tokens {_tokens(c)}" if c.get("training_tokens") else "")
        lines.append(f"{c['cell']:{width}s}  " + "".join(parts))
    return "\n".join(lines + [""] + findings(summary))


def _tokens(cell: dict) -> str:
    """A cell's supervised training tokens, "phase 1 + phase 2" (means over seeds)."""
    tokens = cell.get("training_tokens")
    return f"{tokens['phase1']:,.0f} + {tokens['phase2']:,.0f}" if tokens else "n/a"


def _e(value) -> str:
    return html.escape(str(value))


def _table(summary: dict) -> str:
    axes = list(summary["axes"])
    names = list(summary["metrics"])
    with_paper = {n for n in names if any(c["metrics"][n]["paper"] is not None for c in summary["cells"])}
    head = [*(axes or ["cell"])]
    for n in names:
        head += [n] + ([f"{n}: paper"] if n in with_paper else [])
    head += ["training tokens (phase 1 + phase 2)"]
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for c in summary["cells"]:
        row = [_e(c["labels"][a]) for a in axes] if axes else [_e(c["cell"])]
        for n in names:
            s = c["metrics"][n]
            row.append(_e(fmt(s)))
            if n in with_paper:
                paper = "" if s["paper"] is None else f"{s['paper']:.2f}"
                row.append(f'<span class="paper">{_e(paper)}</span>')
        row.append(_e(_tokens(c)))
        out.append("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _runs_table(summary: dict) -> str:
    names = list(summary["metrics"])
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in ["cell", "seed", *names, "run"]) + "</tr>"]
    for c in summary["cells"]:
        for k, run in enumerate(c["runs"]):
            seed = summary["seeds"][k]
            vals = []
            for n in names:
                v = next((x["value"] for x in c["metrics"][n]["values"] if x["seed"] == seed), None)
                vals.append("n/a" if v is None else f"{v:.2f}")
            link = f'<a href="{_e(run)}/report/report.html">{_e(run)}</a>'
            out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in [c["cell"], seed, *vals]) + f"<td>{link}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def build_study_report(study_dir: str | Path) -> Path:
    """Write <study>/figures/<figure>.png and <study>/report.html (figure embedded); returns the report's path."""
    study_dir = Path(study_dir)
    summary = read_summary(study_dir)
    fig = FIGURES[summary["figure"]](summary)
    png = plots.save(fig, study_dir / "figures" / f"{summary['figure']}.png")
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    metrics = "".join(f"<li><code>{_e(n)}</code>: {_e(m['description'])}"
                      f"{' (lower is better)' if m['lower_is_better'] else ''}</li>" for n, m in summary["metrics"].items())
    settings = [f"base config <code>{_e(summary['base'])}</code>"] + \
        ([f"set <code>{_e(' '.join(summary['set']))}</code>"] if summary["set"] else []) + \
        ([f"--set <code>{_e(' '.join(summary['cli_set']))}</code>"] if summary["cli_set"] else []) + \
        [f"seeds {_e(', '.join(map(str, summary['seeds'])))}",
         f"{summary['runs']['finished']} of {summary['runs']['total']} runs finished",
         f"phase 1 trained in {len(summary['runs']['phase1_runs'])} shared runs"]
    has_paper = any(c["metrics"][n]["paper"] is not None for c in summary["cells"] for n in summary["metrics"])
    sections = [
        f"<h1>Study: {_e(summary['study'])}</h1>",
        f"<p class=\"question\">{_e(summary['question'])}</p>" if summary["question"] else "",
        f'<p class="meta">{" · ".join(settings)} · written {_e(summary["written"])}</p>',
        "<h2>What this shows</h2>",
        "<ul class=\"findings\">" + "".join(f"<li>{_e(f)}</li>" for f in findings(summary)) + "</ul>",
        "<h2>Results</h2>",
        "<p class=\"note\">Mean ± sample standard deviation over seeds (n = seeds with a value); "
        "n/a: no value (a run not finished, or a metric that does not apply, e.g. another relation's object without shared subjects)."
        + (" Columns marked <b>paper</b> are the paper's numbers for the same metric and cell, from third-party "
           "summaries (see docs/paper-numbers.md in the rote repository), on the paper's model and sizes, not ours." if has_paper else "") + "</p>",
        _table(summary),
        f'<p class="callout">The paper: {_e(summary["paper_note"])}</p>' if summary.get("paper_note") else "",
        f"<ul>{metrics}</ul>",
        f'<img alt="{_e(summary["figure"])} figure" src="data:image/png;base64,{data}">',
        "<p class=\"note\">Error bars: standard deviation across seeds." + (" Crosses: the paper's numbers." if has_paper else "") + "</p>",
        "<details><summary>Every run</summary>", _runs_table(summary), "</details>",
    ]
    page = "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>rote study: {_e(summary['study'])}</title>",
                      f"<style>{CSS} p.question {{ font-size: 1.15em; }} .paper {{ color: #8a5a00; }}</style></head><body>",
                      *[s for s in sections if s], "</body></html>"])
    path = study_dir / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
