"""A study over `rote inject`: the same facts injected with several settings, over seeds.

    python scripts/inject_study.py configs/inject/locality.yaml [--seeds 0,1,2] [--cells a,b]
                                   [--report-only]

`rote study` varies `rote run` configs; an injection derives its config from its input (the facts
file, the user relations, the phase-2 fraction), so this script drives `rote.inject` instead. The
study file names the input, the seeds, the output folder and the cells, each a list of `--set`
overrides on top of the injection's defaults (rote.injection.DEFAULTS) and the study's `set`:

    facts: examples/facts.jsonl
    relations: examples/relations.yaml      # optional
    out: studies/inject_locality            # <out>/<cell>/seed<N>/ per injection (resumable)
    results: docs/results/locality/inject   # optional: summary and every card copied here
    seeds: [0, 1, 2]
    set: [eval.multiple_choice=false]       # optional: overrides for every cell, before the cell's
    baseline: false                         # the plain fine-tuning baseline too (doubles the cost)
    cells:
      defaults: []
      paper_like: [phase1.lr=3e-4, ...]

Each injection keeps only its records and card: the exported model and the checkpoints are deleted
once the card is written (about 2 MB a run stays). `<out>/summary.json` and `<out>/summary.md` give each
cell's headline numbers (rote.report.card.summary, plus the unrelated-prompt control and the
training time) as mean ± std over seeds, with every seed's value beside them.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

from rote.errors import ConfigError, RoteError
from rote.fileio import read_json, write_json, write_text

# (column, label, where in card.json's results.rote; None: training seconds from card.json's training)
MEASURES = (
    ("efficacy", "efficacy (training prompt, all facts)", ("efficacy", "all")),
    ("heldout_efficacy", "efficacy, held-out facts", ("efficacy", "heldout")),
    ("generalization", "unseen prompts (en), all facts", ("generalization", "all")),
    ("heldout_generalization", "unseen prompts (en), held-out facts", ("generalization", "heldout")),
    ("unrelated", "unrelated prompts answered with a memorized object", ("unrelated", "all")),
    ("locality", "locality: base-correct probes still correct", ("damage", "still_correct")),
    ("token_agreement", "token agreement with the base model", ("damage", "token_agreement")),
    ("perplexity_ratio", "perplexity / base", ("damage", "perplexity_ratio")),
    ("train_seconds", "training seconds (phase 1 + phase 2)", None),
)
# Files an injection writes into --out besides run/ and the card: the exported model.
KEEP = {"run", "card.md", "card.json"}


def load_study(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read study file {path}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with facts, out, seeds and cells")
    unknown = set(raw) - {"facts", "relations", "out", "results", "seeds", "set", "baseline", "cells", "question"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    for key in ("facts", "out", "cells"):
        if key not in raw:
            raise ConfigError(f"{path}: missing key {key!r}")
    cells, common = raw["cells"], raw.get("set", [])
    if not isinstance(common, list) or not all(isinstance(s, str) for s in common):
        raise ConfigError(f"{path}: set must be a list of KEY=VALUE overrides, got {common!r}")
    if not isinstance(cells, dict) or not cells or \
            not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in (cells or {}).values()):
        raise ConfigError(f"{path}: cells must map each cell name to a list of KEY=VALUE overrides, got {cells!r}")
    # Paths are relative to the working directory (the repository root, as the usage line runs it).
    return {"facts": str(raw["facts"]), "relations": raw.get("relations"), "out": Path(raw["out"]),
            "results": Path(raw["results"]) if raw.get("results") else None,
            "seeds": list(raw.get("seeds", [0, 1, 2])), "baseline": bool(raw.get("baseline", False)),
            "set": common, "cells": cells, "question": raw.get("question", "")}


def run_one(study: dict, cell: str, seed: int) -> Path:
    """Inject (or resume) one cell at one seed; drop the exported model, keep records and card."""
    import rote
    out = study["out"] / cell / f"seed{seed}"
    if (out / "card.json").is_file():
        return out
    t0 = time.time()
    print(f"[inject study] {cell} seed {seed} -> {out}", flush=True)
    rote.inject(study["facts"], relations=study["relations"], out=str(out), baseline=study["baseline"],
                overrides=[*study["set"], *study["cells"][cell], f"seed={seed}"], quiet=True)
    for p in out.iterdir():
        if p.name not in KEEP and p.is_file():
            p.unlink()
    for checkpoint in (out / "run").rglob("checkpoint"):
        shutil.rmtree(checkpoint)
    print(f"[inject study] {cell} seed {seed} done in {time.time() - t0:.0f} s", flush=True)
    return out


def measures(card: dict) -> dict:
    rote_res = card["results"]["rote"]
    out = {}
    for name, _, path in MEASURES:
        if path is None:
            t = card["training"]
            out[name] = round(t["phase1"]["seconds"] + t["phase2"]["seconds"], 1)
        else:
            out[name] = (rote_res.get(path[0]) or {}).get(path[1])
    return out


def summarize(study: dict) -> dict:
    cells = {}
    for cell in study["cells"]:
        per_seed = {}
        for seed in study["seeds"]:
            card = read_json(study["out"] / cell / f"seed{seed}" / "card.json")
            if card is not None:
                per_seed[seed] = measures(card)
        stats = {}
        for name, *_ in MEASURES:
            values = [m[name] for m in per_seed.values() if m[name] is not None]
            if values:
                stats[name] = {"mean": statistics.fmean(values),
                               "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                               "n": len(values), "values": values}
        cells[cell] = {"overrides": study["cells"][cell], "seeds": sorted(per_seed), "measures": stats}
    return {"facts": study["facts"], "relations": study["relations"], "question": study["question"],
            "seeds": study["seeds"], "set": study["set"], "cells": cells}


def table(summary: dict) -> str:
    head = "| cell | seeds | " + " | ".join(label for _, label, _ in MEASURES) + " |"
    lines = [head, "|" + "---|" * (len(MEASURES) + 2)]
    for cell, c in summary["cells"].items():
        row = []
        for name, *_ in MEASURES:
            s = c["measures"].get(name)
            digits = 0 if name == "train_seconds" else 2
            row.append("-" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}")
        lines.append(f"| {cell} | {len(c['seeds'])} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def publish(study: dict) -> None:
    """Copy the summary and every card into the results folder (cards as <cell>/seed<N>.card.md)."""
    results = study["results"]
    # The folder mirrors the study as it is now: cards of cells or seeds no longer in it are removed.
    for folder in (results.iterdir() if results.is_dir() else ()):
        if folder.is_dir():
            shutil.rmtree(folder)
    for name in ("summary.json", "summary.md"):
        write_text(results / name, (study["out"] / name).read_text(encoding="utf-8"))
    for card in sorted(study["out"].glob("*/seed*/card.*")):
        write_text(results / card.parent.parent.name / f"{card.parent.name}.{card.name}",
                   card.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--seeds", help="comma-separated seeds, replacing the study's")
    ap.add_argument("--cells", help="comma-separated cells to run (default: all)")
    ap.add_argument("--report-only", action="store_true", help="summarize what is there; inject nothing")
    args = ap.parse_args(argv)
    try:
        study = load_study(Path(args.study))
        if args.seeds:
            study["seeds"] = [int(s) for s in args.seeds.split(",")]
        chosen = args.cells.split(",") if args.cells else list(study["cells"])
        for name in chosen:
            if name not in study["cells"]:
                raise ConfigError(f"--cells: no cell {name!r} in {args.study} (cells: {', '.join(study['cells'])})")
        if not args.report_only:
            for seed in study["seeds"]:
                for cell in chosen:
                    run_one(study, cell, seed)
    except RoteError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    summary = summarize(study)
    write_json(study["out"] / "summary.json", summary)
    md = f"# {study['question'] or 'inject study'}\n\nFacts: `{study['facts']}`; seeds {study['seeds']}.\n\n{table(summary)}\n"
    write_text(study["out"] / "summary.md", md)
    if study["results"]:
        publish(study)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
