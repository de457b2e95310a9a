"""End to end: the main job's wall time on this machine, broken down by stage.

    .venv/bin/python bench/bench_demo.py [--config configs/demo.yaml] [--reuse RUN_DIR]
    .venv/bin/python bench/bench_demo.py --study studies/depth
    .venv/bin/python bench/bench_demo.py --flops [--against runs/demo]

Runs the config into a fresh temporary run directory (or reads a finished one with --reuse)
and prints each stage's seconds from its timing file, the total and evaluation's share of it.
With --study, a finished study's folder: each stage's seconds summed over its runs (shared
phase-1 runs included), and the wall time of the `rote study` call that ran them (its
timing.json; a resumed study's covers only the last call).
With --flops, the config runs under a FLOP counter (torch's formulas for matrix products, forward
and backward, as computed: padding included) and each stage's arithmetic is set against this
machine's bf16 matrix-product peak, measured in the same call: the seconds a stage would take if
all of it ran at the peak, a floor no implementation reaches. `--against RUN_DIR`, a finished run
of the same config timed without the counter (which slows Python-side dispatch), adds each
stage's measured seconds and its share of the peak.
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

from bench_train_step import bf16_peak  # (wall, CPU) FLOP/s of a bf16 product here


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


def matmul_flops_mode():
    """A dispatch mode that adds up the floating-point operations of matrix products and attention
    (torch's own formulas, torch.utils.flop_counter.flop_registry) and keeps nothing else. torch's
    FlopCounterMode also tracks modules, and over the demo's training it kept tensors alive until
    the process had 23 GB and was killed. CPU attention (`_scaled_dot_product_flash_attention_for_cpu`)
    has no formula: uncounted, about 1% at these lengths (4 x length x width per token and layer)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class MatmulFlops(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    return MatmulFlops()


def stage_flops(config_path: str) -> dict[str, float]:
    """Each stage's floating-point operations, counting a run of `config_path` (fresh temporary run
    directory, evaluation reuse off) under matmul_flops_mode: the count is read as each stage
    finishes (the runner's `_finish`)."""
    import os

    from rote import runner

    os.environ["ROTE_EVAL_CACHE"] = "0"  # a reused eval/base computes nothing
    cfg = config.load(config_path, [f"out_dir={tempfile.mkdtemp(prefix='rote-flops-')}"])
    counter, seen, out = matmul_flops_mode(), [0], {}
    finish = runner._finish

    def counted_finish(run_dir, stage, info, started):
        out[stage], seen[0] = counter.total - seen[0], counter.total
        finish(run_dir, stage, info, started)

    runner._finish = counted_finish
    try:
        with counter:
            run(cfg)  # its stage lines show progress: the counted run is slower
    finally:
        runner._finish = finish
    return out


def print_flops(config_path: str, flops: dict[str, float], peak: float, measured: dict[str, float] | None) -> None:
    import torch
    print(f"{config_path}: matrix-product arithmetic by stage (torch.utils.flop_counter formulas), against this machine's bf16 "
          f"matrix-product peak {peak / 1e12:.3f} TFLOP/s at {torch.get_num_threads()} threads")
    print(f"  {'stage':12s} {'TFLOP':>8s} {'s at peak':>10s}" + (f" {'measured s':>11s} {'of peak':>8s}" if measured else ""))
    for stage, f in flops.items():
        line = f"  {stage:12s} {f / 1e12:8.2f} {f / peak:10.1f}"
        if measured and measured.get(stage):
            line += f" {measured[stage]:11.1f} {f / peak / measured[stage]:8.1%}"
        print(line)
    total = sum(flops.values())
    line = f"  {'sum':12s} {total / 1e12:8.2f} {total / peak:10.1f}"
    if measured:
        m = sum(measured.get(stage, 0.0) for stage in flops)
        line += f" {m:11.1f} {total / peak / m:8.1%}"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--reuse", help="a finished run directory to read instead of running")
    parser.add_argument("--study", help="a finished study folder (studies/NAME) to read")
    parser.add_argument("--flops", action="store_true", help="count each stage's arithmetic and set it against the bf16 peak")
    parser.add_argument("--against", help="with --flops: a finished, uncounted run of the same config, for measured seconds")
    args = parser.parse_args()
    if args.flops:
        flops = stage_flops(args.config)
        print_flops(args.config, flops, bf16_peak(reps=5)[0], stage_seconds(Path(args.against)) if args.against else None)
        return
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
