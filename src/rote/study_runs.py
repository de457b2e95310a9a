"""`rote study`: run (or resume) every run of a study's plan (rote.study.plan), one `rote run`
(rote.runner.run) at a time, then summarize it and write its report. Studies themselves
(rote.study) never run models; this module is where a plan meets the runner. Launched as several
processes, each run is run by all of them (rote.runner.run) and the main process alone writes the
study's own files (rote.training.processes).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from rote.names import CHECKPOINT_DIR
from rote.runner import run
from rote.training import processes


def run_study(path: str | Path, out: str | Path = "studies", seeds: list[int] | None = None, overrides: list[str] = (),
              train: bool = True, quiet: bool = False, keep_checkpoints: bool = False) -> Path:
    """`rote study`: run (or resume) every run of a study (rote.study.plan), then write summary.csv,
    summary.json, the figure and report.html; returns the study folder. With `train=False`, only the
    summary and report are rebuilt from the runs that exist."""
    from rote.report.study import build_study_report
    from rote.study.collect import collect, summarize, write_summary
    from rote.study.plan import expand
    from rote.study.spec import load_study
    processes.start()
    plan = expand(load_study(path, seeds, overrides), out)
    if train:
        _run_plan(plan, quiet or not processes.is_main(), keep_checkpoints)

    def summary() -> None:
        rows = collect(plan)
        write_summary(plan, rows, summarize(plan, rows))
        build_study_report(plan.dir)

    processes.on_main(summary)
    return plan.dir


def _run_plan(plan, quiet: bool = False, keep_checkpoints: bool = False) -> None:
    """Run (or resume) every shared phase-1 run and every cell x seed. A finished cell's phase-2
    checkpoint is deleted unless `keep_checkpoints` (its predictions are what the study reads;
    at 135M parameters each checkpoint is 540 MB)."""
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    total = len(plan.runs) + len(plan.phase1)
    done_p1: set[str] = set()
    step = 0
    for cell_run in plan.runs:
        if cell_run.phase1 and cell_run.phase1 not in done_p1:
            step += 1
            started = time.perf_counter()
            run(plan.phase1[cell_run.phase1], stop_after="eval/phase1", quiet=True)
            done_p1.add(cell_run.phase1)
            say(f"[study {plan.study.name}] {step}/{total} {cell_run.phase1} (phase 1, seed {cell_run.seed}): "
                f"{time.perf_counter() - started:.0f} s")
        step += 1
        started = time.perf_counter()
        # A cell that shares a phase 1 starts from its checkpoint; the runner reads that run's
        # facts and splits them by the cell's own k.
        run(cell_run.cfg, quiet=True)
        if not keep_checkpoints:
            processes.on_main(lambda: shutil.rmtree(cell_run.cfg.run_dir / "phase2" / CHECKPOINT_DIR, ignore_errors=True))
        say(f"[study {plan.study.name}] {step}/{total} {cell_run.cell.id} seed {cell_run.seed}: "
            f"{time.perf_counter() - started:.0f} s")
