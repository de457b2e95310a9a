"""Figures, terminal summary and HTML section for `probe/geometry.json`. Never imports torch.

rote.probe.hidden computes the numbers; this module only reads them, so the probe's figures and report
section can be rebuilt on a laptop from a copied run directory, like the rest of the report.
The paper's numbers are printed beside ours as a target, not as truth (see docs/paper-numbers.md: they come
from third-party notes on Qwen2.5-1.5B, at a layer the notes do not name).
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rote.fileio import read_json
from rote.names import PROBED_PROMPT_SETS
from rote.report.figures import STAGE_COLORS, new_figure, save
from rote.report.html import e, fmt, img, table

PAPER_LABEL = "paper, Qwen2.5-1.5B"
PAPER_SEPARATION = {"base": 0.058, "phase1": 0.191, "phase2": 0.258}  # phase1 = epoch 20
PAPER_ALIGNMENT = {"phase1": {"train": 0.87, "test": 0.58, "unrelated": 0.50},  # epoch 20
                   "phase2": {"train": 0.90, "test": 0.71, "unrelated": 0.50}}
KIND_MARKERS = {"key": "o", "train": "^", "test": "s", "unrelated": "x"}
FIGURES = ("separation", "alignment", "pca")
# Why shared-subject runs read lower than the paper's separate-subject setting, said wherever the number is.
SHARED_NOTE = ("shared subjects: different-relation pairs include the same subject's two key texts, which "
               "differ only in the key token, so inter-relation cosine runs high and separation low")


def read_geometry(run_dir: str | Path) -> dict | None:
    return read_json(Path(run_dir) / "probe" / "geometry.json")


def _color(stage: str, stages: list[str]) -> str:
    """base/phase1/phase2 keep the report's colours; saved epochs get blues that darken with depth."""
    if stage in STAGE_COLORS:
        return STAGE_COLORS[stage]
    epochs = [s for s in stages if s not in STAGE_COLORS]
    shade = 0.75 - 0.45 * (epochs.index(stage) + 1) / (len(epochs) + 1)
    return (shade, shade + 0.1, 0.95)


def _at(geometry: dict, values: list[float]) -> float:
    """A per-layer list's value at the headline layer."""
    return values[geometry["layers"].index(geometry["headline"]["layer"])]


def headline_numbers(geometry: dict) -> dict[str, dict]:
    """stage -> {separation, train, test, unrelated} at the headline layer (all facts)."""
    out = {}
    for stage, g in geometry["stages"].items():
        sep = g["separation"]
        row = {"separation": _at(geometry, sep["separation"]) if sep else None}
        row.update({p: _at(geometry, g["alignment"]["all"][p]) for p in PROBED_PROMPT_SETS})
        out[stage] = row
    return out


def _f(v) -> str:
    return fmt(v, 3)


def key_text(geometry: dict) -> tuple[str, str, str]:
    """(the key text's form, the token read in it, what its states are called): the last token of
    the key text, which is the key token when the key follows the subject (key.position: middle,
    the default and every geometry written before the position was recorded) and the subject's
    last token when the key comes first."""
    if geometry.get("key_position", "middle") == "first":
        return "{key} {subject}", "the subject's last token, after the key token", "key-text states"
    return "{subject} {key}", "the key token", "key-token states"


# ---------------------------------------------------------------- terminal


def format_summary(geometry: dict) -> str:
    """Separation base -> ... -> phase 2 and alignment per stage at the headline layer, beside the paper's."""
    h, nums = geometry["headline"], headline_numbers(geometry)
    stages = list(nums)
    _, _, states = key_text(geometry)
    lines = [f"probe: {geometry['run']}  (layer {h['layer']} of 0..{max(geometry['layers'])}, position {h['position']}: "
             f"{h['chosen_by']}; {geometry['facts']['all']} facts, {geometry['prompts_per_set']} prompts per set)",
             "", f"relation separation of {states} (intra - inter mean cosine)",
             f"  {'this run':<24}" + " -> ".join(f"{s} {_f(nums[s]['separation'])}" for s in stages),
             f"  {PAPER_LABEL:<24}" + " -> ".join(f"{s} {v:.3f}" for s, v in PAPER_SEPARATION.items())
             + "   (phase1 = epoch 20)",
             "", f"alignment: cosine({states[:-1]}, same fact's prompt state), mean over facts",
             f"  {'stage':<24}" + "".join(f"{p:>10}" for p in PROBED_PROMPT_SETS)]
    lines += [f"  {s:<24}" + "".join(f"{_f(nums[s][p]):>10}" for p in PROBED_PROMPT_SETS) for s in stages]
    lines += [f"  {PAPER_LABEL + ' ' + s:<24}" + "".join(f"{v[p]:>10.2f}" for p in PROBED_PROMPT_SETS)
              for s, v in PAPER_ALIGNMENT.items()]
    lines.append("  (paper phase1 = epoch 20; unrelated prompts are the control: it should not rise with test)")
    if geometry.get("subjects") == "shared":
        lines.append(f"note: {SHARED_NOTE}")
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def separation_figure(geometry: dict) -> Figure | None:
    """Relation separation by layer, one line per stage; the headline layer dotted. None with one relation."""
    stages = list(geometry["stages"])
    drawn = [(s, g["separation"]) for s, g in geometry["stages"].items() if g["separation"]]
    if not drawn:
        return None
    fig = new_figure(5.5, 3.4)
    ax = fig.subplots()
    for stage, sep in drawn:
        ax.plot(geometry["layers"], sep["separation"], "o-", ms=3, lw=1.3, color=_color(stage, stages), label=stage)
    ax.axvline(geometry["headline"]["layer"], color="#999999", ls=":", lw=1)
    ax.axhline(0, color="#cccccc", lw=0.8, zorder=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("intra - inter mean cosine")
    ax.set_title(f"relation separation of {key_text(geometry)[2]}")
    ax.legend(fontsize=8, frameon=False)
    return fig


def alignment_figure(geometry: dict) -> Figure:
    """Alignment with train / test / unrelated prompts at the headline layer: a bar per stage,
    one panel per split of facts (phase-2 facts, held-out facts) when both were probed."""
    stages = list(geometry["stages"])
    splits = [s for s in ("phase2", "heldout") if s in geometry["stages"][stages[0]]["alignment"]] or ["all"]
    fig = new_figure(4.2 * len(splits), 3.3)
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    width = 0.8 / len(stages)
    for ax, split in zip(axes, splits):
        for i, stage in enumerate(stages):
            values = [_at(geometry, geometry["stages"][stage]["alignment"][split][p]) for p in PROBED_PROMPT_SETS]
            xs = [j + (i - (len(stages) - 1) / 2) * width for j in range(len(PROBED_PROMPT_SETS))]
            ax.bar(xs, values, width, color=_color(stage, stages), label=stage)
        ax.set_xticks(range(len(PROBED_PROMPT_SETS)), PROBED_PROMPT_SETS)
        ax.set_title({"phase2": "facts seen in phase 2", "heldout": "held-out facts"}.get(split, "all facts"))
        ax.axhline(0, color="#cccccc", lw=0.8)
        ax.grid(axis="y", color="#eeeeee", zorder=0)
        ax.set_axisbelow(True)
    axes[0].set_ylabel(f"cosine with {key_text(geometry)[2][:-1]} (layer {geometry['headline']['layer']})")
    axes[-1].legend(fontsize=8, frameon=False)
    return fig


def pca_figure(geometry: dict) -> Figure:
    """PCA of key-token and prompt states at the headline layer, one panel per stage (each its own
    projection); colour = relation, marker = key text vs train / test / unrelated prompt."""
    stages = list(geometry["stages"])
    labels = geometry["pca_labels"]
    relations = list(dict.fromkeys(labels["relation"]))
    colors = {r: f"C{i % 10}" for i, r in enumerate(relations)}
    fig = new_figure(3.3 * len(stages), 3.6)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    for ax, stage in zip(axes, stages):
        pca = geometry["stages"][stage]["pca"]
        for kind, marker in KIND_MARKERS.items():
            for rel in relations:
                pts = [p for p, k, r in zip(pca["points"], labels["kind"], labels["relation"]) if k == kind and r == rel]
                if pts:
                    ax.scatter(*zip(*pts), marker=marker, s=30 if kind == "key" else 12, color=colors[rel],
                               alpha=0.9 if kind == "key" else 0.45, linewidths=0.8 if kind == "unrelated" else 0)
        ev = pca["explained"]
        ax.set_title(f"{stage}", fontsize=10)
        ax.set_xlabel(f"PC1 ({ev[0]:.0%})", fontsize=8)
        ax.set_ylabel(f"PC2 ({ev[1]:.0%})", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [axes[0].scatter([], [], color=colors[r], marker="o", s=30, label=r) for r in relations]
    handles += [axes[0].scatter([], [], color="#555555", marker=m, s=20, label=k if k != "key" else "key text")
                for k, m in KIND_MARKERS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"unit-normalised hidden states at layer {geometry['headline']['layer']}, position {geometry['headline']['position']}",
                 fontsize=10)
    return fig


def write_figures(run_dir: str | Path) -> list[Path]:
    """Draw probe/figures/{separation,alignment,pca}.png from geometry.json; returns the paths written."""
    geometry = read_geometry(run_dir)
    if geometry is None:
        raise FileNotFoundError(f"{Path(run_dir) / 'probe' / 'geometry.json'} is missing: run `rote probe` first")
    folder = Path(run_dir) / "probe" / "figures"
    out = []
    for name, draw in zip(FIGURES, (separation_figure, alignment_figure, pca_figure)):
        fig = draw(geometry)
        if fig is None:
            (folder / f"{name}.png").unlink(missing_ok=True)  # a figure from an earlier probe must not outlive its data
        else:
            out.append(save(fig, folder / f"{name}.png"))
    return out


# ---------------------------------------------------------------- HTML


def probe_section_html(run_dir: str | Path) -> str:
    """The report's hidden-state section ("" when the run has no probe/geometry.json).
    Figures are embedded from probe/figures, drawn first if any is missing."""
    geometry = read_geometry(run_dir)
    if geometry is None:
        return ""
    folder = Path(run_dir) / "probe" / "figures"
    if not all((folder / f"{n}.png").is_file() for n in FIGURES[1:]):
        write_figures(run_dir)
    h, nums = geometry["headline"], headline_numbers(geometry)
    body = [[s, _f(v["separation"]), *(_f(v[p]) for p in PROBED_PROMPT_SETS)] for s, v in nums.items()]
    for stage in ("base", "phase1", "phase2"):
        paper = PAPER_ALIGNMENT.get(stage, {})
        body.append([f"{PAPER_LABEL}: {stage}", _f(PAPER_SEPARATION[stage]), *(_f(paper.get(p)) for p in PROBED_PROMPT_SETS)])
    imgs = [img(folder / f"{name}.png", f"probe {name}") for name in FIGURES if (folder / f"{name}.png").is_file()]
    form, token, states = key_text(geometry)
    return "\n".join([
        "<h2>Hidden-state geometry</h2>",
        f'<p class="note">Layer {h["layer"]} ({e(h["chosen_by"])}), position <code>{h["position"]}</code> '
        f"(in <code>{e(form)}</code> text, {e(token)}); {geometry['facts']['all']} facts, "
        f"{geometry['prompts_per_set']} prompts per set. Separation: intra - inter mean cosine of {states} "
        f"by relation. Alignment: cosine between a fact's {states[:-1]} and the same fact's prompt states, mean "
        "over facts; unrelated prompts are the control. Paper numbers are for Qwen2.5-1.5B (phase 1 = epoch 20), "
        "a target to compare against, not a layer-matched value.</p>",
        f'<p class="note">{e(SHARED_NOTE)}.</p>' if geometry.get("subjects") == "shared" else "",
        table(["stage", "separation", *(f"alignment {p}" for p in PROBED_PROMPT_SETS)], body),
        *imgs,
    ])
