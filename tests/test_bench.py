"""The benchmark scripts keep working between the sessions that run them.

bench/bench_gpu.py runs only on a lent GPU machine, whose minutes are scarce: a script that broke
since it last ran (it once referred to a module the redesign had moved) would spend them on a
traceback. Every script must at least import and answer --help, and the GPU script runs whole on
CPU as its 2-layer `--tiny` stand-in.
"""
from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))


def test_there_are_bench_scripts():
    assert {p.name for p in SCRIPTS} >= {"bench_gpu.py", "bench_demo.py", "bench_train_step.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_imports_and_answers_help(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.syspath_prepend(str(BENCH))  # as when run as a script: bench_gpu imports bench_demo
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_bench_runs_whole_as_its_tiny_stand_in(tmp_path):
    """Every section but `kernels` (torch.compile's first epoch takes about a minute on CPU), and the
    paper-scale `rote run` to its end: each section reports, none fails."""
    out = tmp_path / "gpu.json"
    sections = ["training", "breakdown", "phase1", "scoring", "run"]
    proc = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--tiny", "--out", str(out), "--only", *sections],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "errors" not in report, proc.stderr[-3000:]
    assert set(report["section_seconds"]) == set(sections)
    assert report["training"] and report["phase1"] and report["breakdown"] and report["scoring"]
    run = report["paper_run"]
    assert run["error"] is None
    assert {"eval/base", "phase1", "phase2", "eval/phase2"} <= set(run["stages"])  # facts asked after phase 2
    assert run["queries_per_stage"] > 0
    assert "[rote] eval/phase2 done" in proc.stdout  # stages are printed as they end


def test_the_demo_bench_counts_matrix_products_forward_and_backward(monkeypatch):
    """bench_demo.py --flops: 2mnk per product; a linear layer's backward adds the two products of
    its gradients; nothing else (element-wise work) counts."""
    import torch
    monkeypatch.syspath_prepend(str(BENCH))
    from bench_demo import matmul_flops_mode
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    with matmul_flops_mode() as counter:
        (a @ b).relu().sum()
    assert counter.total == 2 * 4 * 8 * 16
    layer = torch.nn.Linear(8, 16, bias=False)
    x = torch.randn(4, 8, requires_grad=True)
    with matmul_flops_mode() as counter:
        layer(x).sum().backward()
    assert counter.total == 3 * 2 * 4 * 8 * 16  # forward, input gradient, weight gradient


def test_the_injection_benchmark_cases_are_what_their_script_writes():
    """bench/inject_cases: the committed dev and test cases, and the test set's digest (committed before
    any tuning), are what bench/inject_cases.py writes; every case reads as `rote inject` reads it."""
    from rote.data.userdata import load_input
    result = subprocess.run([sys.executable, str(BENCH / "inject_cases.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    cases = sorted((BENCH / "inject_cases").glob("*/*/case.json"))
    assert {c.parent.parent.name for c in cases} == {"dev", "test"} and len(cases) == 16
    for case in cases:
        folder = case.parent
        optional = {name: str(folder / f) if (folder / f).is_file() else None
                    for name, f in (("relations_file", "relations.yaml"), ("conflicts", "conflicts.jsonl"))}
        inp = load_input(str(folder / "facts.jsonl"), **optional)
        assert len(inp.rows) == json.loads(case.read_text())["facts"] + json.loads(case.read_text())["conflicts"]


def test_the_injection_benchmark_summarizes_per_case_and_guards_the_test_set(tmp_path, monkeypatch):
    """Per case: mean ± std over seeds; per candidate: the spread over cases and the cases meeting each
    target. A candidate already evaluated on the test set is refused (the ledger)."""
    bench = runpy.run_path(str(BENCH / "inject_benchmark.py"))
    def card(eff, loc):
        return {"results": {"rote": {"efficacy": {"all": eff}, "generalization": {"all": eff}, "unrelated": {"all": 0.0},
                                     "damage": {"still_correct": loc, "perplexity_ratio": 1.0}},
                            "baseline": {"efficacy": {"all": 0.9}, "damage": {"still_correct": 0.7}}}}
    for case, seeds in {"a": [(0.95, 0.9), (0.85, 0.9)], "b": [(0.5, 0.6)]}.items():
        for seed, (eff, loc) in enumerate(seeds):
            folder = tmp_path / "c" / case / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "card.json").write_text(json.dumps(card(eff, loc)))
    summary = bench["summarize"](tmp_path, {"c": {"phase2_fraction": 0.1, "set": []}}, ["a", "b"], [0, 1])["c"]
    assert summary["cases"]["a"]["efficacy"]["mean"] == 0.9 and summary["cases"]["a"]["efficacy"]["n"] == 2
    assert summary["over_cases"]["efficacy"] == {"min": 0.5, "median": 0.7, "max": 0.9}
    assert summary["targets_met"]["efficacy"] == 1 and summary["targets_met"]["locality"] == 1
    assert summary["cases"]["b"]["baseline_efficacy"]["mean"] == 0.9
    ledger = tmp_path / "test_runs.jsonl"
    ledger.write_text(json.dumps({"candidate": "current"}) + "\n")
    main = bench["main"]
    main.__globals__["LEDGER"] = ledger
    with pytest.raises(SystemExit, match="already evaluated on the test set"):
        main(["test", "--only", "current", "--final", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="add --final"):
        main(["test", "--only", "current", "--out", str(tmp_path / "out")])
