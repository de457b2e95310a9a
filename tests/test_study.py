"""`rote study`: study files, expansion into runs, phase-1 reuse, resume, summaries and the report.

One 2x2 study (only phase 2 varies) x 2 seeds runs end to end on the tiny model; the rest is
checked on files and planted numbers.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

import rote.training.phases

from rote.cli import main
from rote.errors import ConfigError
from rote.report.study import build_study_report, findings, format_summary
from rote.study_runs import run_study
from rote.study.collect import damage_names
from rote.study.plan import describe, expand
from rote.study.spec import StudyError, load_study

ROOT = Path(__file__).parent.parent
SMOKE = ROOT / "configs" / "smoke.yaml"
SHIPPED = sorted((ROOT / "configs" / "studies").glob("*.yaml"))
PNG = b"\x89PNG\r\n\x1a\n"

METRICS = {
    "heldout_test": {"stage": "phase2", "split": "heldout", "prompt_set": "test", "language": "en", "metric": "prefix"},
    "heldout_train": {"stage": "phase2", "split": "heldout", "prompt_set": "train", "language": "en", "metric": "prefix"},
    "key_after_phase1": {"stage": "phase1", "split": "all", "prompt_set": "key", "language": "en", "metric": "prefix"},
    "test_phase1_only": {"stage": "phase1", "split": "heldout", "prompt_set": "test", "language": "en", "metric": "prefix"},
    "other_object": {"stage": "phase2", "split": "heldout", "prompt_set": "test", "language": "en", "metric": "other_object"},
}


def _tiny_study(folder: Path, model_dir, **changes) -> Path:
    """A 2x2 study on configs/smoke.yaml where only phase 2 varies (k and training prompts)."""
    raw = {
        "study": "tiny",
        "question": "Does a tiny random model learn anything?",
        "base": str(SMOKE),
        "set": [f"model.name={model_dir}", "eval.multiple_choice=false", "eval.prompt_sets=[key, train, test]",
                "eval.stages=[phase1, phase2]"],
        "seeds": [0, 1],
        "grid": {"k": {"1": ["data.phase2_facts=1"], "3": ["data.phase2_facts=3"]},
                 "prompts": {"1": ["phase2.n_prompts=1"], "2": ["phase2.n_prompts=2"]}},
        "metrics": METRICS,
        "paper": {"heldout_test": {"k=1,prompts=1": 0.2, "k=3,prompts=2": 0.9}},
        "figure": "heatmap",
    } | changes
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- shipped study files


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_study_loads_and_expands(path, tmp_path):
    study = load_study(path)
    assert study.name == path.stem and study.question and study.seeds == (0, 1, 2)
    plan = expand(study, tmp_path)
    assert len(plan.runs) == len(study.cells) * len(study.seeds)
    assert len({r.cfg.name for r in plan.runs}) == len(plan.runs)  # every run its own folder
    for run in plan.runs:
        assert run.cfg.out_dir == str(tmp_path / study.name / "runs") and run.cfg.seed == run.seed
        if run.cfg.arm.startswith("plain_finetune"):  # trains its own phase 1: nothing to share
            assert run.phase1 is None and not run.cfg.phase2.checkpoint
            continue
        assert run.phase1 in plan.phase1 and run.cfg.phase2.checkpoint.startswith(str(plan.runs_dir / run.phase1))
        assert not {"base", "phase1"} & set(run.cfg.eval.stages)
    for cfg in plan.phase1.values():
        # all facts held out, except a mixed phase 1, which trains its cells' phase-2 examples too
        assert (cfg.data.phase2_facts > 0) == (cfg.arm == "mixed") and cfg.phase2.checkpoint is None
    text = describe(plan)  # also checks every cell's phase-2 prompts exist (cost)
    assert f"= {len(plan.runs)} runs" in text and "phase 1 trains" in text
    # Paper-size documentation: every shipped study says how to run it on a GPU.
    assert "Paper size on a GPU" in path.read_text()


# Smoke form: the tiny random model, 24 facts per relation (budget asks for k = 20), one seed, one
# prompt per set, one phase-1 epoch (where the grid does not set these itself).
SMOKE_SET = ["data.facts_per_relation=24", "data.phase2_facts=12", "data.n_options=4", "eval.prompts_per_set=1",
             "phase1.until=epochs", "phase1.epochs=1", "eval.fluency_prompts=4"]
# Studies whose base is configs/demo.yaml train with the demo's levers (64 replay windows, 32 known facts,
# 6 contrast questions per person) and ask under the chat template: a few anchors of each kind run the
# same code in a fraction of the time (the chat study's smoke form took 528 s with the demo's counts).
FEW_ANCHORS = ["phase1.preserve.replay=4", "phase1.preserve.known_facts=4", "phase2.preserve.replay=4",
               "phase2.preserve.known_facts=4", "phase2.preserve.contrast=1"]
SMOKE_EXTRA = {"chat": FEW_ANCHORS, "demo": FEW_ANCHORS, "answer_end": FEW_ANCHORS}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
@pytest.mark.slow
def test_every_shipped_study_runs_in_smoke_form(path, tiny_model_dir, tmp_path):
    study = load_study(path)
    set_by_every_cell = set.intersection(*({o.split("=")[0] for o in c.overrides} for c in study.cells))
    smoke = [o for o in SMOKE_SET + SMOKE_EXTRA.get(path.stem, []) if o.split("=")[0] not in set_by_every_cell]
    study_dir = run_study(path, out=tmp_path, seeds=[0], overrides=[f"model.name={tiny_model_dir}", *smoke], quiet=True)
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["runs"]["finished"] == summary["runs"]["total"] == len(study.cells)
    missing = [(c["cell"], name) for c in summary["cells"] for name, m in c["metrics"].items() if m["n"] != 1
               and not (summary["metrics"][name]["prompt_set"] == "key" and c["arm"].startswith("plain_finetune"))]
    # every metric of every cell was measured (another relation's object too: 0 with separate subjects), except
    # those of one prompt form, which the smoke form's single prompt per set may not have, and the key
    # prompts of the plain arms, which have no key (n/a)
    assert all(summary["metrics"][name]["form"] != "all" for cell, name in missing), missing
    for c in summary["cells"]:  # a one-phase baseline says what budget it trained to
        assert (c["budget"] is not None) == (c["arm"] in ("mixed", "plain_finetune", "plain_finetune_k")), c
    assert all(c["training_tokens"] for c in summary["cells"])
    assert (study_dir / "report.html").is_file()


def test_depth_reuses_phase1_across_k():
    plan = expand(load_study(ROOT / "configs" / "studies" / "depth.yaml"))
    assert len(plan.runs) == 24 and len(plan.phase1) == 12  # 4 depths x 3 seeds
    budget = expand(load_study(ROOT / "configs" / "studies" / "budget.yaml", seeds=[0]))
    assert len(budget.runs) == 16 and len(budget.phase1) == 1


# ---------------------------------------------------------------- end to end on the tiny model


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """Run the 2x2 x 2-seed study once, counting phase-1 trainings."""
    folder = tmp_path_factory.mktemp("study")
    path = _tiny_study(folder, tiny_model_dir)
    calls = []
    original = rote.training.phases.memorize
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rote.training.phases, "memorize", lambda *a, **k: calls.append(1) or original(*a, **k))
        study_dir = run_study(path, out=folder / "studies", quiet=True)
    return {"path": path, "dir": study_dir, "out": folder / "studies", "phase1_calls": len(calls)}


@pytest.mark.slow
def test_tiny_study_runs_end_to_end(tiny_run):
    d = tiny_run["dir"]
    assert tiny_run["phase1_calls"] == 2  # one phase-1 training per seed, shared by the 4 cells
    with open(d / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    damage = damage_names()  # every cell's damage to general ability, at phase 1 and phase 2
    assert len(rows) == 4 * 2 * (len(METRICS) + len(damage))
    assert list(rows[0]) == ["study", "cell", "seed", "k", "prompts", "metric", "value"]
    assert {r["cell"] for r in rows} == {"k=1,prompts=1", "k=1,prompts=2", "k=3,prompts=1", "k=3,prompts=2"}
    # every metric applies (shared subjects: another relation's object exists); the random model
    # answers no locality probe and no fact, so its `locality` and fluency's `clean` (shares of those)
    # have no value
    assert all(r["value"] != "" for r in rows if not r["metric"].endswith((".locality", ".clean")))
    assert {r["metric"] for r in rows} == set(METRICS) | set(damage)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["runs"] == {"total": 8, "finished": 8, "phase1_runs": summary["runs"]["phase1_runs"], "stale": {}}
    assert len(summary["runs"]["phase1_runs"]) == 2
    for cell in summary["cells"]:
        for name, stat in cell["metrics"].items():
            values = [v["value"] for v in stat["values"]]
            assert stat["n"] == 2 and stat["mean"] == pytest.approx(sum(values) / 2)
            assert stat["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
        for name in ("damage.phase1.token_agreement", "damage.phase2.perplexity_ratio"):
            assert cell["damage"][name]["n"] == 2 and cell["damage"][name]["mean"] > 0
    # eval/base runs in every run (the damage reference), asking no facts when base is not in eval.stages
    for run_dir in (d / "runs").iterdir():
        assert (run_dir / "eval/base/locality.jsonl").is_file() and not (run_dir / "eval/base/predictions.jsonl").exists()
    for cell in summary["cells"]:  # what each cell trained: the shared phase 1, then its own phase 2
        tokens = cell["training_tokens"]
        assert tokens["phase1"] > 0 and tokens["phase2"] > 0 and tokens["total"] == tokens["phase1"] + tokens["phase2"]
    spent = {c["cell"]: c["training_tokens"] for c in summary["cells"]}
    assert spent["k=1,prompts=1"]["phase1"] == spent["k=3,prompts=2"]["phase1"]
    assert spent["k=1,prompts=1"]["phase2"] < spent["k=3,prompts=2"]["phase2"]
    paper = {c["cell"]: c["metrics"]["heldout_test"]["paper"] for c in summary["cells"]}
    assert paper == {"k=1,prompts=1": 0.2, "k=1,prompts=2": None, "k=3,prompts=1": None, "k=3,prompts=2": 0.9}
    assert (d / "figures" / "heatmap.png").read_bytes().startswith(PNG)
    page = (d / "report.html").read_text()
    assert "Does a tiny random model learn anything?" in page and "data:image/png;base64," in page
    assert "Damage to general ability" in page and "phase2.token_agreement" in page
    assert "heldout_test: paper" in page and "What this shows" in page and "training tokens" in page and "On heldout_test" in page
    assert (d / "study.yaml").read_text() == tiny_run["path"].read_text()
    # Cells' phase-2 checkpoints are gone once evaluated; the shared phase-1 checkpoints stay.
    assert not list((d / "runs").glob("k*/phase2/checkpoint"))
    assert len(list((d / "runs").glob("p1-*/phase1/checkpoint"))) == 2


@pytest.mark.slow
def test_cells_share_phase1_with_their_own_split(tiny_run):
    runs = tiny_run["dir"] / "runs"
    p1 = sorted(runs.glob("p1-*"))
    assert [p.name[-3:] for p in p1] == ["-s0", "-s1"]
    for seed in (0, 1):
        source = [json.loads(l) for l in (p1[seed] / "facts.jsonl").read_text().splitlines()]
        for k in (1, 3):
            for n_prompts in (1, 2):
                cell = runs / f"k-{k}_prompts-{n_prompts}-s{seed}"
                assert not (cell / "phase1").exists() and (cell / "eval" / "phase2" / ".done").is_file()
                facts = [json.loads(l) for l in (cell / "facts.jsonl").read_text().splitlines()]
                assert [f | {"split": ""} for f in facts] == [f | {"split": ""} for f in source]
                assert sum(f["split"] == "phase2" for f in facts) == 2 * k  # the cell's k, not the phase-1 run's
                assert json.loads((cell / "phase2" / "summary.json").read_text())["examples"] == 2 * k * n_prompts
                assert yaml.safe_load((cell / "config.yaml").read_text())["config"]["phase2"]["checkpoint"] == \
                    str(p1[seed] / "phase1" / "checkpoint")


@pytest.mark.slow
def test_phase1_metrics_are_regrouped_with_each_cells_split(tiny_run):
    """A cell's phase-1 numbers come from the shared run's predictions, re-split by the cell's k."""
    runs = tiny_run["dir"] / "runs"
    summary = json.loads((tiny_run["dir"] / "summary.json").read_text())
    for cell in summary["cells"]:
        for entry in cell["metrics"]["test_phase1_only"]["values"]:
            seed = entry["seed"]
            p1 = next(runs.glob(f"p1-*-s{seed}"))
            name = "_".join(f"{a}-{v}" for a, v in cell["labels"].items()) + f"-s{seed}"
            split = {json.loads(l)["id"]: json.loads(l)["split"] for l in (runs / name / "facts.jsonl").read_text().splitlines()}
            records = [json.loads(l) for l in (p1 / "eval" / "phase1" / "predictions.jsonl").read_text().splitlines()]
            hits = [r["hit_prefix"] for r in records if r["prompt_set"] == "test" and split[r["fact_id"]] == "heldout"]
            assert entry["value"] == pytest.approx(sum(hits) / len(hits))
    # The phase-1 run evaluated as many training prompts as its most demanding cell trains on.
    p1_records = [json.loads(l) for l in (next(runs.glob("p1-*-s0")) / "eval/phase1/predictions.jsonl").read_text().splitlines()]
    assert {r["prompt_index"] for r in p1_records if r["prompt_set"] == "train"} == {0, 1}


@pytest.mark.slow
def test_rerun_resumes_without_training(tiny_run, monkeypatch):
    import rote.training.phases
    before = json.loads((tiny_run["dir"] / "summary.json").read_text())
    monkeypatch.setattr(rote.training.phases, "memorize", lambda *a, **k: pytest.fail("phase 1 ran again"))
    monkeypatch.setattr(rote.training.phases, "generalize", lambda *a, **k: pytest.fail("phase 2 ran again"))
    run_study(tiny_run["path"], out=tiny_run["out"], quiet=True)
    after = json.loads((tiny_run["dir"] / "summary.json").read_text())
    assert after["cells"] == before["cells"]


@pytest.mark.slow
def test_jobs_run_the_same_study_in_worker_processes(tiny_run, tiny_model_dir, tmp_path):
    """--jobs 2: every run in one of two worker processes, each cell after the shared phase-1 run it
    starts from (else it would find no checkpoint and fail); the same runs, answers and summary as
    one at a time (the tiny model computes in fp32: a worker's thread count moves no argmax)."""
    study_dir = run_study(_tiny_study(tmp_path, tiny_model_dir), out=tmp_path / "studies", quiet=True, jobs=2)
    one, two = tiny_run["dir"] / "runs", study_dir / "runs"
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and len(names) == 10  # 8 cells + 2 phase-1 runs
    for name in names:
        for predictions in sorted((one / name / "eval").glob("*/predictions.jsonl")):
            other = two / name / predictions.relative_to(one / name)
            answers = [json.loads(line)["generation"] for line in predictions.read_text().splitlines()]
            assert answers == [json.loads(line)["generation"] for line in other.read_text().splitlines()], other
    before, after = (json.loads((d / "summary.json").read_text()) for d in (tiny_run["dir"], study_dir))
    for a, b in zip(before["cells"], after["cells"]):
        assert a["cell"] == b["cell"]
        assert {k: v["mean"] for k, v in a["metrics"].items()} == pytest.approx({k: v["mean"] for k, v in b["metrics"].items()})
    assert after["runs"]["finished"] == 8
    assert json.loads((study_dir / "timing.json").read_text())["jobs"] == 2
    assert not list(two.glob("k*/phase2/checkpoint"))  # deleted once evaluated, as in one process
    logs = sorted(p.name for p in (study_dir / "workers").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]  # the workers' progress bars, off the console
    assert "phase 1" in "".join((study_dir / "workers" / name).read_text() for name in logs)


@pytest.mark.parametrize("jobs", [0, -1, 1.5])
def test_jobs_must_be_a_whole_number(jobs, tmp_path):
    with pytest.raises(ConfigError, match=f"--jobs must be a whole number >= 1, got {re.escape(repr(jobs))}"):
        run_study(tmp_path / "unused.yaml", out=tmp_path, jobs=jobs)


@pytest.mark.slow
def test_a_failing_run_under_jobs_is_raised_and_stops_new_runs(tiny_model_dir, tmp_path):
    """A run that fails in a worker (here: every phase-1 run, whose model folder is gone) is raised
    in the caller with its own error, and no cell that needed it was started."""
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    path = _tiny_study(tmp_path, tiny_model_dir)
    path.write_text(path.read_text().replace(str(tiny_model_dir), str(model)))
    from rote.study.plan import expand
    from rote.study.spec import load_study
    plan = expand(load_study(path), tmp_path / "studies")
    for cfg in plan.phase1.values():  # plan each phase-1 run's data, then take its model away
        from rote.runner import run
        run(cfg, stop_after="data", quiet=True)
    shutil.rmtree(model)
    with pytest.raises(Exception, match=str(model)):
        run_study(path, out=tmp_path / "studies", quiet=True, jobs=2)
    assert not any((plan.dir / "runs").glob("k*"))  # no cell started


@pytest.mark.slow
def test_a_failure_under_jobs_cancels_the_runs_not_started(tiny_model_dir, tmp_path):
    """Four phase-1 runs, two workers; the first fails at once (its folder is locked here), the
    second is already going and finishes; the third and fourth must not start."""
    from rote.errors import LockedError
    from rote.lock import hold
    from rote.study.plan import expand
    from rote.study.spec import load_study
    path = _tiny_study(tmp_path, tiny_model_dir, seeds=[0, 1, 2, 3], grid={"k": {"1": ["data.phase2_facts=1"]}},
                       paper={}, figure="line")
    plan = expand(load_study(path), tmp_path / "studies")
    runs = list(plan.phase1.values())
    assert len(runs) == 4
    runs[0].run_dir.mkdir(parents=True)
    with hold(runs[0].run_dir), pytest.raises(LockedError):
        run_study(path, out=tmp_path / "studies", quiet=True, jobs=2)
    started = [cfg.seed for cfg in runs if (cfg.run_dir / "config.yaml").is_file()]
    assert started == [1], started


@pytest.mark.slow
def test_report_only_and_cli_summary(tiny_run, capsys, monkeypatch):
    import rote.runner
    monkeypatch.setattr(rote.runner, "run", lambda *a, **k: pytest.fail("--report-only ran a stage"))
    assert main(["study", str(tiny_run["path"]), "--out", str(tiny_run["out"]), "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "8/8 runs finished" in out and "k=3,prompts=2" in out and "[paper 0.90]" in out and "report.html" in out


# ---------------------------------------------------------------- dry run and list


def test_dry_run_counts_runs_reuse_and_steps(tiny_model_dir, tmp_path, capsys):
    path = _tiny_study(tmp_path, tiny_model_dir)
    assert main(["study", str(path), "--dry-run", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "4 cells x 2 seeds (0, 1) = 8 runs" in out
    assert "phase 1 trains 2 times (1 distinct phase-1 setting x 2 seeds), not 8" in out
    # smoke: 12 facts, batch 4, 2 epochs -> 6 steps per phase-1 run; phase 2 (batch 4, 1 epoch):
    # k=1 x 1 prompt: 2 examples -> 1 step; 1 x 2: 4 -> 1; 3 x 1: 6 -> 2; 3 x 2: 12 -> 3; per seed 7.
    assert "phase 1: 12 optimizer steps" in out and "phase 2: 14 optimizer steps" in out
    # 2 phase-1 runs x eval/phase1 + 8 cells x eval/phase2, 12 facts x (key 1 + train n + test 2):
    # phase-1 runs evaluate 2 training prompts (the most a cell trains on): 2 x 12 x 5 = 120;
    # cells: 2 seeds x 12 x (4 + 5 + 4 + 5) = 432.
    assert "10 evaluations, 552 greedy generations" in out
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    assert main(["study", str(path), "--dry-run", "--seeds", "7"]) == 0
    assert "4 cells x 1 seed (7) = 4 runs" in capsys.readouterr().out


def test_list_names_each_study_with_its_question(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    for path in SHIPPED:
        raw = yaml.safe_load(path.read_text())
        assert raw["study"] in out and raw["question"] in out


# ---------------------------------------------------------------- bad study files


@pytest.mark.parametrize("change, named", [
    ({"colour": "red"}, "colour"),
    ({"grid": {"k": {"1": "data.phase2_facts=1"}}}, "grid.k.1"),
    ({"grid": {"k": {"1": ["data.phase2_facts"]}}}, "grid.k.1"),
    ({"grid": {"k": ["1", "3"]}}, "grid.k"),
    ({"metrics": {"m": {"stage": "phase2", "split": "heldout", "prompt_set": "test", "metric": "prefix", "lang": "en"}}},
     "metrics.m.lang"),
    ({"metrics": {"m": {"stage": "phase3", "split": "heldout", "prompt_set": "test", "metric": "prefix"}}}, "metrics.m.stage"),
    # summary rows have a row per form over all relations only: this metric could never get a value
    ({"metrics": {"m": {"stage": "phase2", "split": "heldout", "prompt_set": "test", "metric": "prefix",
                        "relation": "capital", "form": "question"}}}, "metrics.m.form"),
    ({"paper": {"heldout_test": {"k=2,prompts=1": 0.5}}}, "paper.heldout_test.k=2,prompts=1"),
    ({"paper": {"nope": {"k=1,prompts=1": 0.5}}}, "paper.nope"),
    ({"figure": "pie"}, "figure"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"set": ["seed=3"]}, "'seed' is set by the study"),
])
def test_bad_study_file_names_the_key(change, named, tiny_model_dir, tmp_path):
    path = _tiny_study(tmp_path, tiny_model_dir, **change)
    with pytest.raises(StudyError) as e:
        expand(load_study(path), tmp_path)
    assert named in str(e.value)


def test_bad_overrides_name_the_key_and_the_cell(tiny_model_dir, tmp_path, capsys):
    path = _tiny_study(tmp_path, tiny_model_dir, grid={"k": {"1": ["phase1.epoks=3"]}}, paper={}, figure="bars")
    with pytest.raises(StudyError, match=r"cell k=1: .*unknown key 'epoks'"):
        expand(load_study(path), tmp_path)
    path = _tiny_study(tmp_path, tiny_model_dir)
    assert main(["study", str(path), "--dry-run", "--set", "data.phase2_facts=2"]) == 2  # every cell sets k
    assert "data.phase2_facts" in capsys.readouterr().err
    # A metric that the cells do not evaluate is refused before anything runs.
    path = _tiny_study(tmp_path, tiny_model_dir, set=[f"model.name={tiny_model_dir}", "eval.stages=[phase2]"])
    with pytest.raises(StudyError, match=r"metrics.key_after_phase1 reads stage phase1"):
        expand(load_study(path), tmp_path)
    assert main(["study", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2


# ---------------------------------------------------------------- report on planted numbers


def _planted(figure: str, axes: dict, means: dict, std: float = 0.02, paper: dict | None = None) -> dict:
    metrics = {"acc": {"description": "after phase2: held-out facts, test prompts, prefix", "lower_is_better": False},
               "unrelated": {"description": "after phase2: held-out facts, unrelated prompts, prefix", "lower_is_better": True}}
    cells = []
    for cid, mean in means.items():
        labels = dict(part.split("=") for part in cid.split(",")) if axes else {}
        stat = lambda m, p=None: {"mean": m, "std": std, "n": 3, "paper": p,  # noqa: E731
                                  "values": [{"seed": s, "value": m} for s in range(3)]}
        cells.append({"cell": cid, "labels": labels, "runs": [f"runs/x-s{s}" for s in range(3)],
                      "metrics": {"acc": stat(mean, (paper or {}).get(cid)), "unrelated": stat(0.1)}})
    return {"study": "planted", "question": "Q?", "study_file": "x.yaml", "base": "demo.yaml", "set": [], "cli_set": [],
            "seeds": [0, 1, 2], "axes": axes, "figure": figure, "paper_note": "", "metrics": metrics,
            "runs": {"total": 3 * len(cells), "finished": 3 * len(cells), "phase1_runs": []}, "cells": cells,
            "written": "now"}


def test_findings_are_computed_from_the_numbers():
    axes = {"epochs": ["3", "6", "10"]}
    means = {"epochs=3": 0.2, "epochs=6": 0.5, "epochs=10": 0.9}
    text = " ".join(findings(_planted("line", axes, means, paper={"epochs=3": 0.35, "epochs=6": 0.89, "epochs=10": 0.98})))
    assert "the best cell is epochs=10 at 0.90 ± 0.02 (n=3)" in text and "the worst is epochs=3" in text
    assert "ranking of the top two holds" in text
    assert "Along epochs, acc rises from 0.20 (epochs=3) to 0.90 (epochs=10)" in text
    assert "of the 3 pairs of cells the paper orders, ours orders 3 the same way: the paper's trend holds here" in text
    # Overlapping spreads and a reversed trend are said as such.
    text = " ".join(findings(_planted("line", axes, {"epochs=3": 0.9, "epochs=6": 0.88, "epochs=10": 0.5}, std=0.05,
                                      paper={"epochs=3": 0.35, "epochs=6": 0.89, "epochs=10": 0.98})))
    assert "lies within the seed spread of the best" in text and "falls" in text
    assert "ours orders 0 the same way (reversed: epochs=3 vs epochs=6; epochs=3 vs epochs=10; epochs=6 vs epochs=10): " \
           "the paper's trend does not hold here" in text
    assert "unrelated (" in text and "lower is better" in text


def test_findings_of_the_only_cell_with_a_value_name_that_cell():
    summary = _planted("bars", {"a": ["1", "2"]}, {"a=1": None, "a=2": 0.4})
    summary["cells"][0]["metrics"] = {m: {"mean": None, "std": None, "n": 0, "paper": None, "values": []}
                                      for m in ("acc", "unrelated")}
    text = " ".join(findings(summary))
    assert "Across the metrics of a=2, the only cell with a value for acc so far, from highest to lowest: " \
           "acc 0.40, unrelated 0.10." in text


def test_one_seed_is_drawn_without_a_spread():
    """A cell of one seed has no std: the heatmap says so and no error bar is drawn (a bar of length 0
    would claim a measured spread of 0)."""
    from rote.report.study_figures import bars_figure, heatmap_figure
    summary = _planted("heatmap", {"a": ["1"], "b": ["x", "y"]}, {"a=1,b=x": 0.4, "a=1,b=y": 0.5}, std=None)
    texts = [t.get_text() for t in heatmap_figure(summary).axes[0].texts]
    assert texts == ["0.40\nno spread", "0.50\nno spread"]

    def error_bars(std):
        ax = bars_figure(_planted("bars", {"v": ["a", "b"]}, {"v=a": 0.4, "v=b": 0.5}, std=std)).axes[0]
        return [seg for c in ax.containers if getattr(c, "errorbar", None)
                for lines in c.errorbar.lines[2] for seg in lines.get_segments() if len(seg)]

    assert len(error_bars(0.05)) == 2 * 2 and error_bars(None) == []  # 2 metrics x 2 cells


@pytest.mark.parametrize("figure, axes, means", [
    ("line", {"a": ["1", "2"], "b": ["x", "y"]}, {"a=1,b=x": 0.1, "a=1,b=y": 0.2, "a=2,b=x": 0.5, "a=2,b=y": None}),
    ("heatmap", {"a": ["1", "2"], "b": ["x", "y"]}, {"a=1,b=x": 0.1, "a=1,b=y": 0.2, "a=2,b=x": 0.5, "a=2,b=y": 0.7}),
    ("bars", {"v": ["method", "lora"]}, {"v=method": 0.6, "v=lora": 0.3}),
    ("bars", {}, {"default": 0.6}),
])
def test_report_draws_every_figure_kind(figure, axes, means, tmp_path):
    summary = _planted(figure, axes, means, paper={next(iter(means)): 0.5})
    for cell in summary["cells"]:
        if cell["metrics"]["acc"]["mean"] is None:
            cell["metrics"]["acc"] |= {"std": None, "n": 0}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = build_study_report(tmp_path).read_text()
    assert (tmp_path / "figures" / f"{figure}.png").read_bytes().startswith(PNG)
    assert "data:image/png;base64," in page
    if None in means.values():
        assert "<td>n/a</td>" in page
    assert "Q?" in format_summary(summary)


def test_study_report_shows_damage_per_cell(tmp_path):
    """The damage metrics (rote.study.collect) in the terminal summary and the report; a summary
    written before every run measured damage has none, and says nothing about it."""
    summary = _planted("bars", {"v": ["method", "lora"]}, {"v=method": 0.6, "v=lora": 0.3})
    for cell, ratio in zip(summary["cells"], (1.5, 3.25)):
        cell["damage"] = {"damage.phase2.perplexity_ratio": {"mean": ratio, "std": 0.25, "n": 3, "values": []},
                          "damage.phase2.locality": {"mean": None, "std": None, "n": 0, "values": []}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = build_study_report(tmp_path).read_text()
    assert "Damage to general ability" in page and "3.25 ± 0.25 (n=3)" in page and "phase2.perplexity_ratio" in page
    assert "v=lora: damage after phase 2: perplexity_ratio 3.25" in format_summary(summary)
    for cell in summary["cells"]:
        del cell["damage"]
    assert "damage" not in format_summary(summary)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "Damage to general ability" not in build_study_report(tmp_path).read_text()


def test_arms_share_the_phase1_they_train(tmp_path):
    study_file = tmp_path / "mixed.yaml"
    study_file.write_text(
        f"study: mixed\nquestion: q\nbase: {SMOKE}\nseeds: [0]\n"
        "grid:\n  kind:\n    method: []\n    mixed: [arm=mixed]\n    icl: [arm=in_context]\n"
        "metrics:\n  t: {stage: phase2, split: heldout, prompt_set: test, metric: prefix}\n")
    plan = expand(load_study(study_file), tmp_path / "out")
    by_cell = {r.cell.id: r for r in plan.runs}
    mixed_p1 = plan.phase1[by_cell["kind=mixed"].phase1]
    method_p1 = plan.phase1[by_cell["kind=method"].phase1]
    assert mixed_p1.arm == "mixed" and mixed_p1.data.phase2_facts == by_cell["kind=mixed"].cfg.data.phase2_facts > 0
    assert method_p1.data.phase2_facts == 0 and by_cell["kind=mixed"].phase1 != by_cell["kind=method"].phase1
    # in_context memorizes as the method does: it shares the method's phase-1 run
    assert by_cell["kind=icl"].phase1 == by_cell["kind=method"].phase1 and method_p1.arm == "method"
    # smoke.yaml sets phase 2's lr, which mixed does not read: the cell leaves it out and says so
    assert "phase2.lr" in by_cell["kind=mixed"].dropped and "phase2.lr" in describe(plan)


def test_a_cell_override_its_arm_does_not_read_is_an_error(tmp_path):
    study_file = tmp_path / "bad.yaml"
    study_file.write_text(
        f"study: bad\nquestion: q\nbase: {SMOKE}\nseeds: [0]\n"
        "grid:\n  kind:\n    mixed: [arm=mixed, phase2.lr=0.1]\n"
        "metrics:\n  t: {stage: phase2, split: heldout, prompt_set: test, metric: prefix}\n")
    with pytest.raises(StudyError, match="cell kind=mixed: the cell: phase2.lr is not read by arm mixed"):
        expand(load_study(study_file), tmp_path / "out")


def test_tradeoff_figure_places_each_cell_by_its_damage(tmp_path):
    """The trade-off figure puts a cell at (its damage mean, its first metric's mean); a cell with no
    damage measured is left out, not drawn at 0."""
    from rote.report.study_figures import tradeoff_figure
    summary = _planted("tradeoff", {"v": ["today", "levers", "old"]}, {"v=today": 0.3, "v=levers": 0.5, "v=old": 0.4})
    for cell, (loc, ppl, secs) in zip(summary["cells"], ((0.1, 20.0, 300.0), (0.9, 1.1, 600.0), (None, None, None))):
        cell["damage"] = {"damage.phase2.locality": {"mean": loc, "std": 0.05, "n": 3},
                          "damage.phase2.perplexity_ratio": {"mean": ppl, "std": 0.1, "n": 3}}
        cell["training_seconds"] = secs
    fig = tradeoff_figure(summary)
    locality, perplexity = fig.axes[:2]
    points = sorted((round(line.get_xdata()[0], 3), round(line.get_ydata()[0], 3)) for line in locality.lines
                    if len(line.get_xdata()) == 1 and line.get_marker() == "o")
    assert points == [(0.1, 0.3), (0.9, 0.5)]
    labels = sorted(t.get_text() for t in perplexity.texts)
    assert labels == ["v=levers (10 min)", "v=today (5 min)"] and perplexity.get_xscale() == "log"
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    build_study_report(tmp_path)
    assert (tmp_path / "figures" / "tradeoff.png").read_bytes().startswith(PNG)


def _grid_study(tmp_path, grid: str, extra: str = "") -> Path:
    study_file = tmp_path / "s.yaml"
    study_file.write_text(f"study: s\nquestion: q\nbase: {SMOKE}\nseeds: [0]\n{extra}grid:\n  e:\n{grid}"
                          "metrics:\n  t: {stage: phase2, split: heldout, prompt_set: test, metric: prefix}\n")
    return study_file


def test_cells_sharing_phase1_must_evaluate_it_alike(tmp_path):
    """The shared run evaluates base and phase 1 once for all its cells: cells that ask those stages
    with different eval settings are refused, naming the setting (they were silently measured with
    the first cell's); a cell that asks neither stage does not constrain it, and the shared run
    evaluates every stage any cell asks."""
    clash = _grid_study(tmp_path, '    "1": [eval.prompts_per_set=1, "eval.stages=[phase1, phase2]"]\n'
                                  '    "3": [eval.prompts_per_set=3, "eval.stages=[phase1, phase2]"]\n')
    with pytest.raises(StudyError, match=r"different eval settings \(eval.prompts_per_set\)"):
        expand(load_study(clash), tmp_path / "out")
    fine = _grid_study(tmp_path, '    "1": [eval.prompts_per_set=1, "eval.stages=[phase2]"]\n'
                                 '    "3": [eval.prompts_per_set=3, "eval.stages=[base, phase2]"]\n'
                                 '    "4": [eval.prompts_per_set=3, "eval.stages=[phase1, phase2]"]\n')
    plan = expand(load_study(fine), tmp_path / "out")
    (shared,) = plan.phase1.values()
    assert shared.eval.prompts_per_set == 3 and list(shared.eval.stages) == ["base", "phase1"]


def test_a_shared_run_asks_the_repurposed_set_of_its_cells_prompts_from(tmp_path):
    """Cells that train another relation's prompts (phase2.prompts_from) and ask the `repurposed`
    set: the shared phase-1 run, which trains no phase 2, still knows which relation that set asks."""
    study = _grid_study(tmp_path, '    "r": [phase2.prompts_from=place_of_residence, '
                                  '"eval.prompt_sets=[key, test, repurposed]", "eval.stages=[phase1, phase2]"]\n',
                        extra="set: [\"data.relations=[place_of_birth]\"]\n")
    plan = expand(load_study(study), tmp_path / "out")
    (shared,) = plan.phase1.values()
    assert shared.eval.repurposed_prompts == "place_of_residence" and shared.phase2.prompts_from is None


def test_report_only_leaves_out_runs_trained_with_other_settings(tiny_run, capsys, monkeypatch):
    """--report-only after --set (or an edited study file) must not put the new settings on numbers
    trained with the old ones: those runs count nowhere, and the summary and a warning name them."""
    import rote.runner
    monkeypatch.setattr(rote.runner, "run", lambda *a, **k: pytest.fail("--report-only ran a stage"))
    out = tiny_run["out"] / "edited"
    import shutil
    shutil.copytree(tiny_run["out"] / "tiny", out / "tiny")
    assert main(["study", str(tiny_run["path"]), "--out", str(out), "--report-only", "--set", "phase2.lr=0.5"]) == 0
    assert "phase2.lr: " in capsys.readouterr().err
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert summary["runs"]["finished"] == 0 and len(summary["runs"]["stale"]) == 8
    assert all(m["n"] == 0 for c in summary["cells"] for m in c["metrics"].values())
    # the same settings again: every run counts, the moved folder's paths do not matter
    assert main(["study", str(tiny_run["path"]), "--out", str(out), "--report-only"]) == 0
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert summary["runs"]["finished"] == 8 and summary["runs"]["stale"] == {}
    # A run written by an earlier rote with a key its arm no longer reads (key.word was written for
    # every arm) is read as its arm reads it: not stale, its numbers stay.
    for config_file in (out / "tiny" / "runs").glob("*/config.yaml"):
        raw = yaml.safe_load(config_file.read_text())
        raw["config"]["key"]["word"] = "blicket"
        config_file.write_text(yaml.safe_dump(raw))
    assert main(["study", str(tiny_run["path"]), "--out", str(out), "--report-only"]) == 0
    summary = json.loads((out / "tiny" / "summary.json").read_text())
    assert summary["runs"]["finished"] == 8 and summary["runs"]["stale"] == {}


def test_phase1_contrast_is_asked_about_each_cells_phase2_people(tmp_path):
    """Phase 1's contrast questions ask about the phase-2 split's people, so a shared phase-1 run
    with them keeps its cells' k (it asked no one when its facts were all held out)."""
    study = _grid_study(tmp_path, '    "1": [data.phase2_facts=1]\n    "2": [data.phase2_facts=2]\n',
                        extra="set: [phase1.preserve.contrast=2]\n")
    plan = expand(load_study(study), tmp_path / "out")
    by_cell = {r.cell.id: r for r in plan.runs}
    assert by_cell["e=1"].phase1 != by_cell["e=2"].phase1
    assert {c.data.phase2_facts for c in plan.phase1.values()} == {1, 2}
    plain = _grid_study(tmp_path, '    "1": [data.phase2_facts=1]\n    "2": [data.phase2_facts=2]\n')
    (shared,) = expand(load_study(plain), tmp_path / "out").phase1.values()
    assert shared.data.phase2_facts == 0
