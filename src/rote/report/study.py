"""A study's findings, terminal table and self-contained HTML report, from `summary.json` only.

Never imports torch: `rote study` writes `<study>/summary.json` (cells x metrics with mean, std
and n over seeds, the paper's numbers where given), and everything here reads that file, so a
study's report can be rebuilt on a laptop. The "what this shows" paragraph is computed from the
numbers (best and worst cell, whether seed spreads overlap, trends along the first axis,
agreement with the paper's order); it makes no claim the numbers do not carry. The figures are
rote.report.study_figures; a baselines grid shows each cell's arm and token budget.
"""
from __future__ import annotations

from pathlib import Path

from rote.fileio import read_json
from rote.report.figures import embed
from rote.report.html import e, table, write_page
from rote.report.study_figures import FIGURES


def read_summary(study_dir: str | Path) -> dict:
    summary = read_json(Path(study_dir) / "summary.json")
    if summary is None:
        raise FileNotFoundError(f"{study_dir} is not a study folder: {Path(study_dir) / 'summary.json'} is missing")
    return summary


def fmt(stat: dict | None) -> str:
    """`0.62 ± 0.05 (n=3)`; one seed has no spread and says so; no value is `n/a`."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("std") is None:
        return f"{stat['mean']:.2f} (n={stat['n']}, no spread)"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f} (n={stat['n']})"


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
    if len(ranked) == 1:  # one cell, or one cell with a value so far
        only = next(c for c in cells if c["cell"] == ranked[0][0])
        values = [(n, only["metrics"][n]) for n in metrics if only["metrics"][n]["mean"] is not None]
        order = sorted(values, key=lambda v: -v[1]["mean"])
        whose = "the one cell" if len(cells) == 1 else f"{only['cell']}, the only cell with a value for {first} so far"
        out.append(f"Across the metrics of {whose}, from highest to lowest: "
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
    return "\n".join(lines + _damage_lines(summary) + [""] + findings(summary))


def _damage_lines(summary: dict) -> list[str]:
    """Per cell, the damage to general ability after phase 2 (means over seeds; the report has all)."""
    out = []
    for c in summary["cells"]:
        found = {n.rsplit(".", 1)[1]: s["mean"] for n, s in c.get("damage", {}).items()
                 if n.startswith("damage.phase2.") and s["mean"] is not None}
        if found:
            out.append(f"  {c['cell']}: damage after phase 2: " + ", ".join(f"{k} {v:.2f}" for k, v in found.items()))
    return ["", "damage to general ability (rote.study.collect):", *out] if out else []


def _tokens(cell: dict) -> str:
    """A cell's supervised training tokens, "phase 1 + phase 2" (means over seeds)."""
    tokens = cell.get("training_tokens")
    return f"{tokens['phase1']:,.0f} + {tokens['phase2']:,.0f}" if tokens else "n/a"


def _results_table(summary: dict) -> str:
    axes = list(summary["axes"])
    names = list(summary["metrics"])
    with_paper = {n for n in names if any(c["metrics"][n]["paper"] is not None for c in summary["cells"])}
    head = [*(axes or ["cell"])]
    for n in names:
        head += [n] + ([f"{n}: paper"] if n in with_paper else [])
    head += ["training tokens (phase 1 + phase 2)", "training time"]
    arms = len({c.get("arm", "method") for c in summary["cells"]}) > 1  # a baselines grid: say what each cell is
    head = head[:len(axes or ["cell"])] + (["arm"] if arms else []) + head[len(axes or ["cell"]):]
    body = []
    for c in summary["cells"]:
        row = [e(c["labels"][a]) for a in axes] if axes else [e(c["cell"])]
        if arms:
            row.append(e(c.get("arm", "method")) + (f'<br><span class="note">{e(c["budget"])}</span>' if c.get("budget") else ""))
        for n in names:
            s = c["metrics"][n]
            row.append(e(fmt(s)))
            if n in with_paper:
                paper = "" if s["paper"] is None else f"{s['paper']:.2f}"
                row.append(f'<span class="paper">{e(paper)}</span>')
        row.append(e(_tokens(c)))
        seconds = c.get("training_seconds")
        row.append("n/a" if seconds is None else f"{seconds / 60:.1f} min")
        body.append(row)
    return table(head, body, raw=True)


def _damage_table(summary: dict) -> str:
    """Damage to general ability per cell (rote.study.collect.DAMAGE_METRICS), mean ± std over seeds;
    empty for a study summarized before every run measured it."""
    names = list(dict.fromkeys(n for c in summary["cells"] for n in c.get("damage", {})))
    if not names:
        return ""
    body = [[c["cell"], *(fmt(c["damage"].get(n)) for n in names)] for c in summary["cells"]]
    return "\n".join([
        "<h2>Damage to general ability</h2>",
        '<p class="note">Every run measures it at each evaluated stage, against the base model: locality (of the '
        "probes the base model answers correctly, the share still correct), token agreement (answer tokens whose "
        "teacher-forced argmax equals the base model's) and perplexity on held-out paragraphs over the base "
        "model's.</p>",
        table(["cell", *(n.removeprefix("damage.") for n in names)], body),
    ])


def _runs_table(summary: dict) -> str:
    names = list(summary["metrics"])
    body = []
    for c in summary["cells"]:
        for k, run in enumerate(c["runs"]):
            seed = summary["seeds"][k]
            vals = []
            for n in names:
                v = next((x["value"] for x in c["metrics"][n]["values"] if x["seed"] == seed), None)
                vals.append("n/a" if v is None else f"{v:.2f}")
            link = f'<a href="{e(run)}/report/report.html">{e(run)}</a>'
            body.append([e(v) for v in [c["cell"], seed, *vals]] + [link])
    return table(["cell", "seed", *names, "run"], body, raw=True)


def build_study_report(study_dir: str | Path) -> Path:
    """Write <study>/figures/<figure>.png and <study>/report.html (figure embedded); returns the report's path."""
    study_dir = Path(study_dir)
    summary = read_summary(study_dir)
    figure = embed(FIGURES[summary["figure"]](summary), study_dir / "figures" / f"{summary['figure']}.png",
                   f"{summary['figure']} figure")
    metrics = "".join(f"<li><code>{e(n)}</code>: {e(m['description'])}"
                      f"{' (lower is better)' if m['lower_is_better'] else ''}</li>" for n, m in summary["metrics"].items())
    settings = [f"base config <code>{e(summary['base'])}</code>"] + \
        ([f"set <code>{e(' '.join(summary['set']))}</code>"] if summary["set"] else []) + \
        ([f"--set <code>{e(' '.join(summary['cli_set']))}</code>"] if summary["cli_set"] else []) + \
        [f"seeds {e(', '.join(map(str, summary['seeds'])))}",
         f"{summary['runs']['finished']} of {summary['runs']['total']} runs finished",
         f"phase 1 trained in {len(summary['runs']['phase1_runs'])} shared runs"]
    has_paper = any(c["metrics"][n]["paper"] is not None for c in summary["cells"] for n in summary["metrics"])
    sections = [
        f"<h1>Study: {e(summary['study'])}</h1>",
        f"<p class=\"question\">{e(summary['question'])}</p>" if summary["question"] else "",
        f'<p class="meta">{" · ".join(settings)} · written {e(summary["written"])}</p>',
        "<h2>What this shows</h2>",
        "<ul class=\"findings\">" + "".join(f"<li>{e(f)}</li>" for f in findings(summary)) + "</ul>",
        "<h2>Results</h2>",
        "<p class=\"note\">Mean ± sample standard deviation over seeds (n = seeds with a value); "
        "n/a: no value (a run not finished, or a metric that does not apply, e.g. another relation's object without shared subjects)."
        + (" Columns marked <b>paper</b> are the paper's numbers for the same metric and cell, from third-party "
           "summaries (see docs/paper-numbers.md in the rote repository), on the paper's model and sizes, not ours." if has_paper else "") + "</p>",
        _results_table(summary),
        f'<p class="callout">The paper: {e(summary["paper_note"])}</p>' if summary.get("paper_note") else "",
        f"<ul>{metrics}</ul>",
        figure,
        "<p class=\"note\">Error bars: standard deviation across seeds." + (" Crosses: the paper's numbers." if has_paper else "") + "</p>",
        _damage_table(summary),
        "<details><summary>Every run</summary>", _runs_table(summary), "</details>",
    ]
    return write_page(study_dir / "report.html", f"rote study: {summary['study']}", sections,
                      " p.question { font-size: 1.15em; } .paper { color: #8a5a00; }")
