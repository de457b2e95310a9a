"""End to end: the main job's wall time on this machine, broken down by stage.

    .venv/bin/python bench/bench_demo.py [--config configs/demo.yaml] [--reuse RUN_DIR]

Runs the config into a fresh temporary run directory (or reads a finished one with --reuse)
and prints each stage's seconds from its done marker, and the total.
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--reuse", help="a finished run directory to read instead of running")
    args = parser.parse_args()
    if args.reuse:
        run_dir, wall = Path(args.reuse), None
    else:
        cfg = config.load(args.config, [f"out_dir={tempfile.mkdtemp(prefix='rote-bench-')}"])
        t = time.perf_counter()
        run_dir = run(cfg, quiet=True)
        wall = time.perf_counter() - t
    seconds = stage_seconds(run_dir)
    total = sum(seconds.values())
    print(f"{args.config if not args.reuse else run_dir}: stages")
    for stage, s in seconds.items():
        print(f"  {stage:12s} {s:7.1f} s  {s / total:5.1%}")
    print(f"  {'sum':12s} {total:7.1f} s" + (f"   wall {wall:.1f} s (model loading, data, etc. included)" if wall else ""))


if __name__ == "__main__":
    main()
