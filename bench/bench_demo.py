"""End to end: the main job's wall time on this machine, broken down by stage.

    .venv/bin/python bench/bench_demo.py [--config configs/demo.yaml] [--reuse RUN_DIR]
    .venv/bin/python bench/bench_demo.py --study studies/depth

Runs the config into a fresh temporary run directory (or reads a finished one with --reuse)
and prints each stage's seconds from its timing file, the total and evaluation's share of it.
With --study, a finished study's folder: each stage's seconds summed over its runs (shared
phase-1 runs included), and the wall time of the `rote study` call that ran them (its
timing.json; a resumed study's covers only the last call).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rote import config
from rote.fileio import read_seconds
from rote.names import RUN_STAGES
from rote.runner import run


def stage_seconds(run_dir: Path) -> dict[str, float]:
    out = {}
    for stage in RUN_STAGES:
        if (run_dir / stage / ".done").is_file():  # seconds: timing.json (older runs: .done)
            out[stage] = read_seconds(run_dir / stage) or 0.0
    return out


def print_stages(title: str, seconds: dict[str, float], wall: float | None = None) -> None:
    total = sum(seconds.values())
    print(f"{title}: stages")
    for stage, s in seconds.items():
        print(f"  {stage:12s} {s:7.1f} s  {s / total:5.1%}")
    evaluation = sum(s for stage, s in seconds.items() if stage.startswith("eval/"))
    print(f"  {'sum':12s} {total:7.1f} s" + (f"   wall {wall:.1f} s (model loading, data, etc. included)" if wall else ""))
    print(f"  evaluation   {evaluation:7.1f} s  {evaluation / total:5.1%} of the stages")


def study_seconds(study_dir: Path) -> tuple[dict[str, float], int]:
    """Each stage's seconds summed over the runs of a study folder, and how many runs."""
    runs = sorted(p for p in (study_dir / "runs").iterdir() if p.is_dir())
    totals: dict[str, float] = {stage: 0.0 for stage in RUN_STAGES}
    for run_dir in runs:
        for stage, s in stage_seconds(run_dir).items():
            totals[stage] += s
    return {k: v for k, v in totals.items() if v}, len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--reuse", help="a finished run directory to read instead of running")
    parser.add_argument("--study", help="a finished study folder (studies/NAME) to read")
    args = parser.parse_args()
    if args.study:
        study_dir = Path(args.study)
        seconds, n = study_seconds(study_dir)
        timing = study_dir / "timing.json"
        wall = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        print_stages(f"{study_dir} ({n} runs)", seconds, wall)
        return
    if args.reuse:
        run_dir, wall = Path(args.reuse), None
    else:
        cfg = config.load(args.config, [f"out_dir={tempfile.mkdtemp(prefix='rote-bench-')}"])
        t = time.perf_counter()
        run_dir = run(cfg, quiet=True)
        wall = time.perf_counter() - t
    print_stages(args.config if not args.reuse else str(run_dir), stage_seconds(run_dir), wall)


if __name__ == "__main__":
    main()
