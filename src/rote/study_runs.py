"""`rote study`: run (or resume) every run of a study's plan (rote.study.plan), then summarize it
and write its report. Studies themselves (rote.study) never run models; this module is where a
plan meets the runner (rote.runner.run).

Two ways to spread a study over a machine:
- `jobs`: that many runs at once, each in a worker process of its own with a share of the CPU
  cores, or one GPU each when there are GPUs (worker i gets GPU i mod the count). A cell starts
  once the shared phase-1 run it starts from is finished. Each run's numbers are the same
  whichever worker runs it, up to the rounding a different thread count gives (one machine).
- launched as several processes (`accelerate launch`): each run is run by all of them, data
  parallel, and the main process alone writes the study's own files (rote.training.processes).
"""
from __future__ import annotations

import os
import sys
import shutil
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from rote.errors import ConfigError
from rote.fileio import write_json
from rote.lock import check_folder
from rote.names import CHECKPOINT_DIR, TIMING_FILE
from rote.runner import run
from rote.training import processes


def run_study(path: str | Path, out: str | Path = "studies", seeds: list[int] | None = None, overrides: list[str] = (),
              train: bool = True, quiet: bool = False, keep_checkpoints: bool = False, jobs: int = 1) -> Path:
    """`rote study`: run (or resume) every run of a study (rote.study.plan), `jobs` at a time, then
    write summary.csv, summary.json, the figure and report.html; returns the study folder. With
    `train=False`, only the summary and report are rebuilt from the runs that exist."""
    from rote.report.study import build_study_report
    from rote.study.collect import collect, stale_runs, summarize, write_summary
    from rote.study.plan import expand
    from rote.study.spec import load_study
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    processes.start()
    if jobs > 1 and processes.world() > 1:
        raise ConfigError(f"--jobs {jobs} runs several runs at once in processes of its own; under accelerate "
                          f"launch ({processes.world()} processes) every run is already shared by all of them: "
                          f"use one or the other")
    plan = expand(load_study(path, seeds, overrides), out)
    check_folder(plan.dir, "study folder")  # --report-only writes into it with no lock to check it
    if train:
        started = time.perf_counter()
        say = (lambda *a: None) if quiet or not processes.is_main() else (lambda *a: print(*a, flush=True))
        if jobs == 1:
            _run_plan(plan, say, keep_checkpoints)
        else:
            _run_plan_in_parallel(plan, say, keep_checkpoints, jobs)
        # This call's wall time (a resumed study's covers what this call ran): bench/bench_demo.py --study
        seconds = round(time.perf_counter() - started, 1)
        processes.on_main(lambda: write_json(plan.dir / TIMING_FILE, {"seconds": seconds, "jobs": jobs,
                                                                       "runs": len(plan.runs),
                                                                       "phase1_runs": len(plan.phase1)}))

    def summary() -> None:
        stale = stale_runs(plan)
        for name, diff in sorted(stale.items()):
            print(f"[study {plan.study.name}] warning: {name} was trained with other settings than the study "
                  f"asks now ({'; '.join(diff[:3])}); its numbers are left out (delete runs/{name} and run the study to redo it)",
                  file=sys.stderr)
        rows = collect(plan, stale)
        write_summary(plan, rows, summarize(plan, rows, stale))
        build_study_report(plan.dir)

    processes.on_main(summary)
    return plan.dir


def _run_plan(plan, say, keep_checkpoints: bool = False) -> None:
    """Run (or resume) every shared phase-1 run and every cell x seed, one at a time. A finished
    cell's phase-2 checkpoint is deleted unless `keep_checkpoints` (its predictions are what the
    study reads; at 135M parameters each checkpoint is 540 MB)."""
    total = len(plan.runs) + len(plan.phase1)
    done_p1: set[str] = set()
    step = 0
    for cell_run in plan.runs:
        if cell_run.phase1 and cell_run.phase1 not in done_p1:
            step += 1
            seconds = _run_one(plan.phase1[cell_run.phase1], "eval/phase1", None)
            done_p1.add(cell_run.phase1)
            say(f"[study {plan.study.name}] {step}/{total} {cell_run.phase1} (phase 1, seed {cell_run.seed}): {seconds:.0f} s")
        step += 1
        # A cell that shares a phase 1 starts from its checkpoint; the runner reads that run's
        # facts and splits them by the cell's own k.
        seconds = _run_one(cell_run.cfg, None, None if keep_checkpoints else cell_run.cfg.run_dir)
        say(f"[study {plan.study.name}] {step}/{total} {cell_run.cell.id} seed {cell_run.seed}: {seconds:.0f} s")


def _run_one(cfg, stop_after: str | None, drop_checkpoint_of: Path | None) -> float:
    """One run (or its resumption) up to `stop_after`; the phase-2 checkpoint of the run folder
    `drop_checkpoint_of` is deleted once it is evaluated. Returns the seconds it took."""
    started = time.perf_counter()
    run(cfg, stop_after=stop_after, quiet=True)
    if drop_checkpoint_of is not None:
        processes.on_main(lambda: shutil.rmtree(drop_checkpoint_of / "phase2" / CHECKPOINT_DIR, ignore_errors=True))
    return time.perf_counter() - started


def _run_plan_in_parallel(plan, say, keep_checkpoints: bool, jobs: int) -> None:
    """The runs of `_run_plan`, `jobs` at a time in worker processes: the shared phase-1 runs and
    the cells that train their own phase 1 first, each other cell once its phase-1 run is done.
    A run is handed to the pool only when a worker is free (the pool itself would queue more, and
    a queued run can no longer be held back), so the first failure stops every run not yet
    started; the runs already going finish (their folders stay resumable) and it is raised."""
    import multiprocessing as mp
    total, step = len(plan.runs) + len(plan.phase1), 0
    waiting = {name: [c for c in plan.runs if c.phase1 == name] for name in plan.phase1}

    def cell(c) -> tuple:  # (label, config, stop_after, folder whose phase-2 checkpoint goes, phase-1 run name)
        return f"{c.cell.id} seed {c.seed}", c.cfg, None, None if keep_checkpoints else c.cfg.run_dir, None

    todo = deque((f"{name} (phase 1, seed {cfg.seed})", cfg, "eval/phase1", None, name)
                 for name, cfg in plan.phase1.items())
    todo += [cell(c) for c in plan.runs if not c.phase1]
    context = mp.get_context("spawn")  # a clean interpreter: no torch threads or CUDA state inherited
    slots = context.Queue()
    for slot in range(jobs):
        slots.put(slot)
    running: dict[Future, tuple[str, str | None]] = {}
    failure: tuple[str, BaseException] | None = None
    logs = plan.dir / "workers"  # each worker's progress bars and warnings, off the study's console
    logs.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_starts,
                             initargs=(slots, jobs, _cores(), _gpus(), str(logs))) as pool:
        while todo or running:
            while todo and len(running) < jobs and failure is None:
                label, cfg, stop_after, dropped, phase1 = todo.popleft()
                running[pool.submit(_run_one, cfg, stop_after, dropped)] = (label, phase1)
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                label, phase1 = running.pop(future)
                if future.exception() is not None:
                    failure = failure or (label, future.exception())
                    continue
                step += 1
                say(f"[study {plan.study.name}] {step}/{total} {label}: {future.result():.0f} s")
                todo += [cell(c) for c in waiting.get(phase1, [])]
    if failure is not None:
        label, error = failure
        say(f"[study {plan.study.name}] {label} failed; the runs already started were finished, no other was started")
        raise error


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (all, when it is unset)."""
    import torch
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]


def _worker_starts(slots, jobs: int, cores: int, gpus: list[str], logs: str) -> None:
    """A worker process's set-up, before it computes anything: its stderr (progress bars,
    warnings) to `logs`/worker-<i>.log; one GPU of `gpus` (worker i gets GPU i mod their count;
    set before CUDA starts in this process), else its share of the CPU cores as torch's threads.
    A run's failure still reaches the study as its exception."""
    slot = slots.get()
    log = open(os.path.join(logs, f"worker-{slot}.log"), "a", buffering=1)
    os.dup2(log.fileno(), 2)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    import torch
    torch.set_num_threads(max(1, cores // jobs))
