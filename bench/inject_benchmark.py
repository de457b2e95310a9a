"""The injection benchmark: `rote inject` with candidate settings on every case of bench/inject_cases,
per case and as a distribution over cases, never only as a mean.

    python bench/inject_benchmark.py dev  [--candidates configs/inject/candidates.yaml] [--only a,b]
                                          [--cases builtin,few] [--seeds 0] [--out studies/inject_benchmark]
    python bench/inject_benchmark.py test --only NAME --final    # once per candidate default, at the end
    python bench/inject_benchmark.py dev --report-only           # summarize what is there; inject nothing

A candidate is a phase-2 fraction and `--set` overrides on top of `rote.injection.DEFAULTS`
(configs/inject/candidates.yaml). Each injection runs with the plain fine-tuning baseline, keeps its
records and card (the exported model and checkpoints are deleted) under
`<out>/<set>/<candidate>/<case>/seed<N>/`, and its wall time. `<out>/<set>/summary.{json,md}` give,
per candidate and case, each measure's mean ± std over seeds, and per candidate the distribution over
cases (min, median, max) and how many cases meet each target of issue 24 (TARGETS). `--figure DIR`
draws each case's efficacy against locality, a marker per candidate.

The test set is evaluated once per candidate: `test` needs `--final`, and every final run is
appended to bench/inject_cases/test_runs.jsonl (candidate, settings, commit, date); a candidate
already there is refused, so that no default is retuned after its test numbers were seen.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "bench" / "inject_cases"
LEDGER = CASES / "test_runs.jsonl"
CANDIDATES = ROOT / "configs" / "inject" / "candidates.yaml"
KEEP = {"run", "card.md", "card.json", "wall.json"}

# (name, label, path in card.json's results.<who>; "wall" from wall.json)
MEASURES = (
    ("efficacy", "efficacy, all facts", ("efficacy", "all")),
    ("unseen", "unseen prompts (en), all facts", ("generalization", "all")),
    ("heldout_unseen", "unseen prompts (en), held-out facts", ("generalization", "heldout")),
    ("control", "unrelated prompts answered with a memorized object", ("unrelated", "all")),
    ("locality", "locality (still correct)", ("damage", "still_correct")),
    ("token_agreement", "token agreement", ("damage", "token_agreement")),
    ("perplexity_ratio", "perplexity / base", ("damage", "perplexity_ratio")),
    ("gold_twice", "answers naming the gold twice", ("damage", "gold_twice")),
    ("clean", "right answers ending cleanly", ("damage", "clean")),
    ("baseline_efficacy", "baseline efficacy, all facts", ("baseline", "efficacy", "all")),
    ("baseline_locality", "baseline locality", ("baseline", "damage", "still_correct")),
    ("wall_seconds", "wall time (s)", None),
)
# Issue 24's targets, on every test case: measure -> (comparison, bound).
TARGETS = {"efficacy": (">=", 0.90), "unseen": (">=", 0.85), "locality": (">=", 0.85),
           "perplexity_ratio": ("<=", 1.10), "control": ("<=", 0.10)}


def load_candidates(path: Path) -> dict[str, dict]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = {}
    for name, c in (raw.get("candidates") or {}).items():
        if not isinstance(c, dict) or set(c) - {"phase2_fraction", "set", "about"}:
            raise SystemExit(f"{path}: candidate {name!r} must map phase2_fraction / set / about, got {c!r}")
        out[name] = {"phase2_fraction": float(c.get("phase2_fraction", 0.1)), "set": list(c.get("set") or []),
                     "about": c.get("about", "")}
    if not out:
        raise SystemExit(f"{path}: no candidates")
    return out


def case_inputs(folder: Path) -> dict:
    optional = lambda name: str(folder / name) if (folder / name).is_file() else None  # noqa: E731
    return {"facts": str(folder / "facts.jsonl"), "relations": optional("relations.yaml"),
            "conflicts": optional("conflicts.jsonl")}


def run_one(out: Path, case: Path, candidate: dict, seed: int) -> None:
    """Inject one case with one candidate at one seed (resumed when its card is there)."""
    import rote
    if (out / "card.json").is_file():
        return
    print(f"[inject benchmark] {out}", flush=True)
    started = time.time()
    rote.inject(**case_inputs(case), out=str(out), phase2_fraction=candidate["phase2_fraction"],
                overrides=[*candidate["set"], f"seed={seed}"], baseline=True, overwrite=True, quiet=True)
    (out / "wall.json").write_text(json.dumps({"seconds": round(time.time() - started, 1)}) + "\n")
    for p in out.iterdir():
        if p.name not in KEEP:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for checkpoint in (out / "run").rglob("checkpoint"):
        shutil.rmtree(checkpoint)


def measures(folder: Path) -> dict:
    card = json.loads((folder / "card.json").read_text())
    res = card["results"]
    out = {}
    for name, _, path in MEASURES:
        if path is None:
            out[name] = json.loads((folder / "wall.json").read_text())["seconds"] if (folder / "wall.json").is_file() else None
            continue
        who, path = (path[0], path[1:]) if path[0] == "baseline" else ("rote", path)
        value = res.get(who) or {}
        for key in path:
            value = (value or {}).get(key)
        out[name] = value
    for lang, m in ((res.get("rote") or {}).get("languages") or {}).items():
        out[f"unseen_{lang}"] = m.get("all")
    return out


def _stats(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def summarize(root: Path, candidates: dict, cases: list[str], seeds: list[int]) -> dict:
    out = {}
    for name in candidates:
        per_case = {}
        for case in cases:
            seeds_found = [measures(root / name / case / f"seed{s}") for s in seeds
                           if (root / name / case / f"seed{s}" / "card.json").is_file()]
            if seeds_found:
                keys = dict.fromkeys(k for m in seeds_found for k in m)
                per_case[case] = {k: _stats([m.get(k) for m in seeds_found]) for k in keys}
        spread = {}
        for key, *_ in MEASURES:
            means = [c[key]["mean"] for c in per_case.values() if c.get(key)]
            if means:
                spread[key] = {"min": min(means), "median": statistics.median(means), "max": max(means)}
        met = {key: sum(1 for c in per_case.values() if c.get(key) and
                        (c[key]["mean"] >= bound if op == ">=" else c[key]["mean"] <= bound))
               for key, (op, bound) in TARGETS.items()}
        out[name] = {**candidates[name], "cases": per_case, "over_cases": spread, "targets_met": met,
                     "cases_run": len(per_case)}
    return out


def table(summary: dict) -> str:
    cols = [m for m in MEASURES if m[0] in ("efficacy", "unseen", "control", "locality", "perplexity_ratio",
                                            "gold_twice", "baseline_efficacy", "wall_seconds")]
    lines = []
    for name, c in summary.items():
        lines += [f"## {name}: phase-2 fraction {c['phase2_fraction']:g}, set {c['set'] or '(defaults)'}", "",
                  "| case | " + " | ".join(label for _, label, _ in cols) + " |", "|---|" + "---:|" * len(cols)]
        for case, m in c["cases"].items():
            cell = lambda s, k: "-" if s is None else (f"{s['mean']:.0f}" if k == "wall_seconds" else  # noqa: E731
                                                      f"{s['mean']:.2f} ± {s['std']:.2f}")
            lines.append(f"| {case} | " + " | ".join(cell(m.get(k), k) for k, *_ in cols) + " |")
        spread = " · ".join(f"{k} {v['min']:.2f} / {v['median']:.2f} / {v['max']:.2f}"
                            for k, v in c["over_cases"].items() if k in TARGETS)
        met = ", ".join(f"{k} {n}/{c['cases_run']}" for k, n in c["targets_met"].items())
        lines += ["", f"Over cases (min / median / max of the case means): {spread}.", f"Cases meeting the target: {met}.", ""]
    return "\n".join(lines)


def figure(summary: dict, folder: Path, which: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (name, c), marker in zip(summary.items(), "os^Dvx*P"):
        xs = [m["locality"]["mean"] for m in c["cases"].values() if m.get("locality") and m.get("efficacy")]
        ys = [m["efficacy"]["mean"] for m in c["cases"].values() if m.get("locality") and m.get("efficacy")]
        ax.scatter(xs, ys, marker=marker, label=name, alpha=0.8)
        for case, m in c["cases"].items():
            if m.get("locality") and m.get("efficacy"):
                ax.annotate(case, (m["locality"]["mean"], m["efficacy"]["mean"]), fontsize=6, alpha=0.6)
    ax.axhline(TARGETS["efficacy"][1], color="grey", lw=0.5, ls="--")
    ax.axvline(TARGETS["locality"][1], color="grey", lw=0.5, ls="--")
    ax.set_xlabel("locality (base-correct probes still correct)")
    ax.set_ylabel("efficacy (training prompts, all facts)")
    ax.set_title(f"rote inject on the {which} cases: each case, mean over seeds")
    ax.legend(fontsize=7)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{which}_efficacy_locality.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("which", choices=["dev", "test"])
    ap.add_argument("--candidates", default=str(CANDIDATES))
    ap.add_argument("--only", help="comma-separated candidates (default: all)")
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "studies" / "inject_benchmark"))
    ap.add_argument("--final", action="store_true", help="test set: the one evaluation of these candidates")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--figure", help="folder for the efficacy-against-locality figure")
    args = ap.parse_args(argv)
    candidates = load_candidates(Path(args.candidates))
    if args.only:
        unknown = set(args.only.split(",")) - set(candidates)
        if unknown:
            raise SystemExit(f"--only: no candidate {sorted(unknown)} in {args.candidates} ({', '.join(candidates)})")
        candidates = {k: v for k, v in candidates.items() if k in args.only.split(",")}
    cases = sorted(p.name for p in (CASES / args.which).iterdir() if (p / "case.json").is_file())
    if args.cases:
        unknown = set(args.cases.split(",")) - set(cases)
        if unknown:
            raise SystemExit(f"--cases: no case {sorted(unknown)} in {CASES / args.which} ({', '.join(cases)})")
        cases = args.cases.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.out) / args.which
    if args.which == "test" and not args.report_only:
        if not args.final:
            raise SystemExit("the test set is evaluated once per candidate default, at the end: add --final")
        done = {json.loads(line)["candidate"] for line in LEDGER.read_text().splitlines()} if LEDGER.is_file() else set()
        again = sorted(set(candidates) & done)
        if again:
            raise SystemExit(f"{LEDGER}: candidate(s) {again} were already evaluated on the test set; name a new candidate")
        with LEDGER.open("a") as f:
            for name, c in candidates.items():
                f.write(json.dumps({"candidate": name, **c, "seeds": seeds, "commit": _commit(),
                                    "date": time.strftime("%Y-%m-%d %H:%M")}) + "\n")
    if not args.report_only:
        for seed in seeds:
            for case in cases:
                for name, c in candidates.items():
                    run_one(root / name / case / f"seed{seed}", CASES / args.which / case, c, seed)
    summary = summarize(root, candidates, cases, seeds)
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = f"# rote inject on the {args.which} cases (seeds {seeds})\n\n{table(summary)}\n"
    (root / "summary.md").write_text(md)
    if args.figure:
        print(f"figure: {figure(summary, Path(args.figure), args.which)}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
