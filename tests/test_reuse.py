"""eval/base measured once per inputs (rote.evaluation.reuse): a second run with the same inputs copies
the stored measurements and writes the same bytes; a change to any input is measured afresh."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rote import config
from rote.evaluation import reuse
from rote.names import DONE_FILE

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.yaml"
RECORDS = ("summary.json", "predictions.jsonl", "locality.jsonl")


# ---------------------------------------------------------------- pure: digests and entries


def test_a_file_is_hashed_once_until_it_changes(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    first = reuse.file_digest(weights, tmp_path / "cache")
    real = reuse.hashlib.file_digest
    monkeypatch.setattr(reuse.hashlib, "file_digest", lambda *a: pytest.fail("hashed again"))
    assert reuse.file_digest(weights, tmp_path / "cache") == first
    monkeypatch.setattr(reuse.hashlib, "file_digest", real)
    weights.write_bytes(b"b" * 100)  # same size: the stamp's mtime and ctime tell
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert reuse.file_digest(weights, tmp_path / "cache") != first


def test_no_cache_or_an_unwritable_one_stores_nothing(tmp_path):
    """ROTE_EVAL_CACHE=0 means store nothing (the resume check hashes a local model folder too), and
    a cache under a file must not stop a run: the memo is only an optimisation."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    expected = reuse.file_digest(weights, None)
    assert not list(tmp_path.rglob("*.json"))
    (tmp_path / "plain-file").write_text("x")
    assert reuse.file_digest(weights, tmp_path / "plain-file" / "cache") == expected


def test_a_damaged_memo_is_read_again_and_rewritten(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    expected = reuse.file_digest(weights, tmp_path / "cache")
    for damaged in ('{"stamp": [', "[1, 2]", "\xff"):
        (memo,) = (tmp_path / "cache" / "eval" / "file-hashes").iterdir()
        memo.write_text(damaged, encoding="latin-1")
        assert reuse.file_digest(weights, tmp_path / "cache") == expected
        assert json.loads(memo.read_text())["sha256"] == expected


def test_model_digest_parts(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer.json").write_text("{}")
    before = reuse.model_digest(folder, tmp_path / "cache")
    (folder / "tokenizer.json").write_text('{"added": 1}')
    after = reuse.model_digest(folder, tmp_path / "cache")
    assert after["weights"] == before["weights"] and after["config_and_tokenizer"] != before["config_and_tokenizer"]


def test_a_hub_id_is_keyed_by_its_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants
    snapshot = tmp_path / "models--owner--tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--owner--tiny" / "refs").mkdir()
    (tmp_path / "models--owner--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert reuse.model_folder("owner/tiny") == snapshot
    assert reuse.model_folder("owner/absent") is None


def test_an_entry_is_served_only_when_finished(tmp_path):
    stage = tmp_path / "run" / "eval" / "base"
    stage.mkdir(parents=True)
    (stage / "locality.jsonl").write_text('{"correct": true}\n')
    partial = tmp_path / "cache" / "eval" / "k1"
    partial.mkdir(parents=True)  # a killed store left a folder without its marker
    assert reuse.lookup(tmp_path / "cache", "k1") is None
    entry = reuse.store(tmp_path / "cache", "k2", {"part": 1}, stage, {"perplexity": 9.0})
    assert entry == reuse.lookup(tmp_path / "cache", "k2") and (entry / DONE_FILE).is_file()
    assert reuse.store(tmp_path / "cache", "k2", {"part": 1}, stage, {"perplexity": 1.0}) == entry  # kept
    assert not [p for p in (tmp_path / "cache" / "eval").iterdir() if p.name.startswith(".")]
    copy = tmp_path / "copy"
    assert reuse.restore(entry, copy) == {"perplexity": 9.0}
    assert (copy / "locality.jsonl").read_bytes() == (stage / "locality.jsonl").read_bytes()
    assert not (copy / "predictions.jsonl").exists()


def test_code_digest_covers_evaluation_code():
    root = Path(reuse.__file__).resolve().parent.parent
    covered = {str(p.relative_to(root)) for pattern in reuse.CODE for p in root.glob(pattern)}
    assert {"evaluation/scoring.py", "evaluation/locality.py", "evaluation/matching.py", "text.py", "eval_stage.py",
            "training/encode.py"} <= covered


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("1", True), ("", True)])
def test_the_switch(monkeypatch, value, on):
    monkeypatch.setenv(reuse.ENV, value)
    assert reuse.enabled() is on


# ---------------------------------------------------------------- runs on the tiny model


def _turn_on(mp, cache: Path) -> None:
    mp.setenv("ROTE_CACHE", str(cache))  # the user's cache (and its converted models) is left alone
    mp.setenv(reuse.ENV, "1")


def base_eval(model_dir, out: Path, *overrides: str) -> Path:
    """A run of configs/smoke.yaml up to eval/base; returns its folder."""
    from rote.runner import run
    cfg = config.load(SMOKE, [f"model.name={model_dir}", f"out_dir={out}", *overrides])
    return run(cfg, stop_after="eval/base", quiet=True)


def reused_from(run_dir: Path) -> str | None:
    return json.loads((run_dir / "eval/base/timing.json").read_text()).get("reused_from")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rote-cache")


@pytest.fixture(scope="module")
def first(tiny_model_dir, cache, tmp_path_factory):
    """The run that measures and stores; the tests below ask the same or change one input."""
    with pytest.MonkeyPatch.context() as mp:
        _turn_on(mp, cache)
        return base_eval(tiny_model_dir, tmp_path_factory.mktemp("first"))


@pytest.fixture
def reuse_on(monkeypatch, cache):
    _turn_on(monkeypatch, cache)


@pytest.mark.slow
def test_a_second_run_reuses_and_writes_the_same_bytes(first, reuse_on, tiny_model_dir, tmp_path, cache):
    assert reused_from(first) is None
    second = base_eval(tiny_model_dir, tmp_path)
    entry = Path(reused_from(second))
    assert entry.parent == cache / "eval" and (entry / DONE_FILE).is_file()
    assert json.loads((entry / reuse.KEY_FILE).read_text())["queries"]
    for name in [f"eval/base/{n}" for n in RECORDS] + ["key_tokens.json"]:
        assert (second / name).read_bytes() == (first / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("override", [
    "seed=1",  # other facts
    "eval.prompts_per_set=1",  # other queries
    "eval.precision=fp32",
    "eval.max_new_tokens=12",
    "key.init=random",
])
def test_a_changed_setting_is_measured_afresh(first, reuse_on, tiny_model_dir, tmp_path, override):
    assert reused_from(base_eval(tiny_model_dir, tmp_path, override)) is None


@pytest.mark.slow
def test_changed_weights_are_measured_afresh(first, reuse_on, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    changed = shutil.copytree(tiny_model_dir, tmp_path / "model")
    weights = load_file(changed / "model.safetensors")
    name = sorted(weights)[0]
    weights[name].view(-1)[0] += 1.0
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    assert reused_from(base_eval(changed, tmp_path / "runs")) is None


@pytest.mark.slow
def test_changed_locality_data_is_measured_afresh(first, reuse_on, tiny_model_dir, tmp_path, monkeypatch):
    from rote.evaluation import locality
    probes = locality.load_probes()[:-1]
    monkeypatch.setattr(locality, "load_probes", lambda: probes)
    run_dir = base_eval(tiny_model_dir, tmp_path)
    assert reused_from(run_dir) is None
    assert len((run_dir / "eval/base/locality.jsonl").read_text().splitlines()) == len(probes)


@pytest.mark.slow
def test_changed_evaluation_code_is_measured_afresh(first, reuse_on, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(reuse, "code_digest", lambda: "another scorer")
    assert reused_from(base_eval(tiny_model_dir, tmp_path)) is None


@pytest.mark.slow
def test_another_processor_measures_afresh(first, reuse_on, tiny_model_dir, tmp_path, monkeypatch):
    """A cache shared between machines (ROTE_CACHE on a network drive) must not hand an AMD CPU the
    base model's answers rounded by an Intel one's bf16 kernels."""
    from rote.training import processes
    here = processes.processor("cpu")
    assert json.loads((Path(reused_from(base_eval(tiny_model_dir, tmp_path / "same"))) / reuse.KEY_FILE)
                      .read_text())["device"] == here
    monkeypatch.setattr(processes, "processor", lambda device: "cpu: another model (AMX)")
    assert reused_from(base_eval(tiny_model_dir, tmp_path / "other")) is None


def test_the_processor_names_the_cpu_and_its_kernels():
    import torch
    from rote.training import processes
    name = processes.processor("cpu")
    assert name.startswith("cpu: ") and name.endswith(f"({torch.backends.cpu.get_cpu_capability()})")
    assert processes.processor(torch.device("meta")) == "meta"


@pytest.mark.slow
def test_switched_off_measures(first, tiny_model_dir, tmp_path):
    assert reused_from(base_eval(tiny_model_dir, tmp_path)) is None  # conftest: ROTE_EVAL_CACHE=0


@pytest.mark.slow
def test_damage_only_base_is_shared_across_seeds(reuse_on, tiny_model_dir, tmp_path):
    """A study's cells measure only damage at eval/base: with key.init mean and without fluency the seed
    changes nothing they measure, so seed 1 reuses seed 0's. Fluency continues the run's own prompts,
    about the seed's people, so with it seed 1 measures its own; the same seed still reuses."""
    damage_only = ["eval.stages=[phase1,phase2]", "eval.fluency_prompts=0"]
    assert reused_from(base_eval(tiny_model_dir, tmp_path / "a", *damage_only)) is None
    second = base_eval(tiny_model_dir, tmp_path / "b", *damage_only, "seed=1")
    assert reused_from(second) and not (second / "eval/base/predictions.jsonl").exists()
    assert reused_from(base_eval(tiny_model_dir, tmp_path / "c", *damage_only, "eval.precision=fp32")) is None
    fluent = damage_only[0]
    assert reused_from(base_eval(tiny_model_dir, tmp_path / "d", fluent)) is None
    assert reused_from(base_eval(tiny_model_dir, tmp_path / "e", fluent, "seed=1")) is None
    again = base_eval(tiny_model_dir, tmp_path / "f", fluent)
    assert reused_from(again) and (again / "eval/base/fluency.jsonl").read_text() == (tmp_path / "d/smoke/eval/base/fluency.jsonl").read_text()
