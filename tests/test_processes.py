"""rote as several processes (`accelerate launch`: 2 gloo processes on CPU): `rote eval` shares out
its batches and gives the same bytes as one process; `rote run` gives the same records as one
process within float noise; only the main process writes; a refusal reaches every process.
(rote.training.processes)"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rote.errors import ConfigError, LockedError
from rote.training import processes

ROOT = Path(__file__).resolve().parent.parent
AUDITED = Path(__file__).parent / "helpers" / "audited_cli.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ROTE_EVAL_CACHE": "0"}

# 2 processes vs 1 in `rote run`, with fp32 training and evaluation, on the tiny model (smoke config):
# the training update differs by float noise (the loss sums and the gloo all-reduce add in another
# order), and so do the records after it. Numbers are compared relatively, |a - b| / max(1, |a|, |b|)
# (perplexity is ~5e4 here, log-probabilities ~10). Measured (AMD EPYC, 1 thread): 3e-07 at most for
# unrounded numbers (log-probabilities, losses, perplexity); the 4-decimal fields one rounding step
# apart (1e-04 absolute, at most 1e-04 relative); no generation, hit or rank differs. A run that
# really differs, phase1.lr x1.01 in one process: 8.8e-04 (gold_prob_norm; log-probabilities 4.9e-04).
# 3e-04 is three rounding steps of a 4-decimal field and 1,000x the unrounded noise, 3x below lr x1.01.
# Generations, hits and ranks must be equal: in bf16 (noise ~1e-02) 3 of 240 records flipped, so at
# fp32 noise (~10^4 x smaller) a flip is expected about once in a thousand runs.
TOLERANCE = 3e-4
SMOKE = [f"--set={s}" for s in (
    "phase1.precision=fp32", "phase2.precision=fp32", "eval.precision=fp32",
    "eval.batch_size=16",  # 8 generation batches, not 2: the shares interleave
    # measured after every epoch, shared out: every process must stop at the same epoch
    "phase1.until=memorized", "phase2.until=validation", "phase2.epochs=2",
    # anchors built by the main process (greedy answers, sampled replay) and sent to the other
    "phase1.preserve.contrast=1", "phase1.preserve.replay=4", "phase1.preserve.replay_source=samples")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rote.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _two(args: list[str], root: Path, log: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`rote ARGS` launched as 2 processes by accelerate (gloo on CPU), each process's writes under
    `root` recorded into `log` (tests/helpers/audited_cli.py)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    return subprocess.run([*launch, str(AUDITED), str(root), str(log), *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _writes(log: Path) -> tuple[list[str], list[str]]:
    """The writes under the audited folder of process 0 and of process 1."""
    return tuple((log / f"writes-{r}.txt").read_text().splitlines() for r in (0, 1))


def _run_folder(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A run folder of the smoke config (data stage) with a phase-2 checkpoint: the tiny model with
    the run's key tokens, so that the key prompts are asked as after training."""
    from rote.config import read_run_config
    from rote.data.templates import key_tokens
    from rote.runner import Session
    from rote.training.checkpoint import save_checkpoint
    from rote.training.models import load_stage

    done = _one(["data", "configs/smoke.yaml", "--set", f"model.name={tiny_model_dir}",
                 "--set", f"out_dir={tmp_path}"])
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "smoke"
    cfg = read_run_config(run_dir)
    session = Session(cfg, run_dir, [])
    model, tokenizer, record = load_stage(str(tiny_model_dir), cfg.model.dtype, key_tokens(session.relations.values(), cfg.key),
                                          cfg.key.init, cfg.seed)
    save_checkpoint(model, tokenizer, record, run_dir / "phase2" / "checkpoint")
    return run_dir


@pytest.mark.slow
def test_eval_in_two_processes_writes_the_same_bytes_and_only_the_main_process_writes(tiny_model_dir, tmp_path):
    run_dir = _run_folder(tmp_path / "a", tiny_model_dir)
    other = tmp_path / "b" / "smoke"
    shutil.copytree(run_dir, other)
    # bf16 (the default): sharing out whole batches keeps even bf16's numbers, which move with a
    # batch's composition; batch size 16: the 120 queries are 8 generation batches, interleaved.
    one = _one(["eval", str(run_dir), "--stage", "x"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _two(["eval", str(other), "--stage", "x"], other, tmp_path / "log")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    # predictions.jsonl: every record, in query order; locality.jsonl: the damage measures (main process)
    for name in ("predictions.jsonl", "locality.jsonl", "summary.json"):
        assert (run_dir / "eval/x" / name).read_bytes() == (other / "eval/x" / name).read_bytes(), name
    records = [json.loads(line) for line in (other / "eval/x/predictions.jsonl").read_text().splitlines()]
    assert len(records) == 120 and sum("gold_rank" in r for r in records) == 120  # generation and multiple choice
    main, second = _writes(tmp_path / "log")
    assert second == [], second[:5]
    assert any("eval/x/predictions.jsonl" in w for w in main) and any(".rote.lock" in w for w in main)
    assert two.stdout.count("records in") == 1  # the main process alone prints


@pytest.mark.slow
def test_run_in_two_processes_gives_the_records_of_one_within_float_noise(tiny_model_dir, tmp_path):
    config = ["configs/smoke.yaml", "--set", f"model.name={tiny_model_dir}", *SMOKE]
    one = _one(["run", *config, "--set", f"out_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _two(["run", *config, "--set", f"out_dir={tmp_path / 'two'}"], tmp_path / "two", tmp_path / "log")
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    a, b = tmp_path / "one" / "smoke", tmp_path / "two" / "smoke"
    assert _record_files(a) == _record_files(b)
    worst = max(_difference(a / name, b / name) for name in _record_files(a))
    print(f"rote run, 2 processes vs 1: worst difference {worst:.2e}, tolerance {TOLERANCE:.0e}")
    assert worst <= TOLERANCE
    summaries = {phase: json.loads((b / phase / "summary.json").read_text()) for phase in ("phase1", "phase2")}
    assert summaries["phase1"]["processes"] == summaries["phase2"]["processes"] == 2
    assert len(summaries["phase1"]["key_accuracy_by_epoch"]) == 2 and len(summaries["phase2"]["validation_by_epoch"]) == 2
    assert summaries["phase1"]["preserve"]["anchored_positions"] > 0
    main, second = _writes(tmp_path / "log")
    # The training loop makes its output folder on every process (mkdir, exist_ok), writing nothing into it.
    assert [w for w in second if w not in (f"os.mkdir {b / 'phase1'}", f"os.mkdir {b / 'phase2'}")] == [], second[:5]
    assert any("phase2/checkpoint" in w for w in main) and any("report.html" in w for w in main)
    # every step logged once, by the main process
    assert [json.loads(x)["step"] for x in (b / "phase1/metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]

    # The comparison can fail: one process with phase 1's learning rate x1.01 is farther than the tolerance.
    lr = _one(["run", *config, "--set", "phase1.lr=1.01e-3", "--set", f"out_dir={tmp_path / 'lr'}"])
    assert lr.returncode == 0, lr.stderr[-2000:]
    changed = max(_difference(a / name, tmp_path / "lr/smoke" / name) for name in _record_files(a))
    print(f"phase1.lr x1.01, 1 process: worst difference {changed:.2e}")
    assert changed > TOLERANCE


def _record_files(run_dir: Path) -> list[str]:
    names = ("predictions.jsonl", "summary.json", "metrics.jsonl", "facts.jsonl", "key_tokens.json", "locality.jsonl")
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name in names)


def _difference(a: Path, b: Path) -> float:
    """The largest relative difference between two record files' numbers (inf where anything else
    differs: texts, booleans, counts, keys, order). Wall-clock fields and the process count are left out."""
    def rows(path: Path):
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    return _apart(rows(a), rows(b))


def _apart(x, y) -> float:
    if isinstance(x, dict) and isinstance(y, dict):
        keys = set(x) - {"processes", "tokens_per_s", "seconds"}
        if keys != set(y) - {"processes", "tokens_per_s", "seconds"}:
            return float("inf")
        return max((_apart(x[k], y[k]) for k in keys), default=0.0)
    if isinstance(x, list) and isinstance(y, list):
        return float("inf") if len(x) != len(y) else max((_apart(u, v) for u, v in zip(x, y)), default=0.0)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
    if numbers and (isinstance(x, float) or isinstance(y, float)):
        return abs(x - y) / max(1.0, abs(x), abs(y))
    return 0.0 if x == y and type(x) is type(y) else float("inf")


@pytest.mark.slow
def test_a_refusal_reaches_every_process(tiny_model_dir, tmp_path):
    """The main process cannot take the lock: both processes stop with the LockedError (exit 5),
    neither waits for the other."""
    from rote.lock import hold
    run_dir = _run_folder(tmp_path, tiny_model_dir)
    with hold(run_dir):
        two = _two(["eval", str(run_dir), "--stage", "x"], run_dir, tmp_path / "log", timeout=300)
    assert two.returncode != 0
    assert two.stderr.count("error: run folder") == 2 and "(process 1 of 2)" in two.stderr, two.stderr[-2000:]
    assert not (run_dir / "eval" / "x").exists()


# ---------------------------------------------------------------- one process: the plain path


def test_one_process_computes_on_the_machines_gpu(monkeypatch, tiny_model_dir):
    """A one-GPU run must evaluate (eval/base too) and build its anchors on the GPU, not where the
    model was loaded (the CPU). No GPU here: CUDA is claimed, and the session's move is seen on
    the `meta` device standing in for it."""
    import torch

    from rote import config
    from rote.runner import Session
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert processes.device() == torch.device("cuda")
    monkeypatch.setattr(processes, "device", lambda: torch.device("meta"))
    cfg = config.load(ROOT / "configs" / "smoke.yaml", [f"model.name={tiny_model_dir}"])
    session = Session(cfg, Path("unused"), [])
    monkeypatch.setattr(processes, "is_main", lambda: False)  # writes no key-token record
    session.model_for("eval/base")
    assert {p.device.type for p in session.model.parameters()} == {"meta"}


def test_one_process_runs_everything_itself():
    assert processes.world() == 1 and processes.is_main() and processes.device() is None
    assert processes.on_main(lambda: 7) == 7

    def fails():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        processes.on_main(fails)
    batches = [[0, 1], [2], [3, 4]]
    assert processes.my_share(batches, processes.sharing(object(), False)) is batches
    mine = {2: "c", 0: "a"}
    assert processes.merge(mine, False) is mine


def test_the_main_process_holds_the_lock_as_one_process_does(tmp_path):
    from rote.lock import hold
    with processes.main_holds(tmp_path):
        with pytest.raises(LockedError):
            with hold(tmp_path):
                pass
    with hold(tmp_path):  # released
        pass


def test_commands_that_run_as_one_process_refuse_a_launcher(monkeypatch, capsys):
    from rote.cli import main
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["report", "nowhere"]) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "rote report (process 1 of 2): error: rote report runs as one process, but it was launched as 2" in err


def test_seeded_seeds_and_restores_the_mps_generator(monkeypatch):
    """On an Apple GPU, the adapters, dropout and replay samples are drawn from the MPS generator:
    seeded and put back as found (torch.random.fork_rng forks one device type, CUDA by default)."""
    import torch
    calls = []
    monkeypatch.setattr(processes, "device", lambda: torch.device("mps"))
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: "state before")
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: calls.append(("seed", s)))
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda s: calls.append(("restored", s)))
    with processes.seeded(123):
        assert calls == [("seed", 123)]
    assert calls == [("seed", 123), ("restored", "state before")]
