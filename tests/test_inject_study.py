"""scripts/inject_study.py: study files are checked, and the summary is the mean and spread of the
cards it finds (planted cards here: no model is trained)."""
from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("inject_study", ROOT / "scripts" / "inject_study.py")
inject_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inject_study)


def card(efficacy: float, unrelated: float, locality: float, seconds: float) -> dict:
    part = lambda v: {"phase2": 1.0, "heldout": v, "all": v}  # noqa: E731
    return {"results": {"rote": {"efficacy": part(efficacy), "generalization": part(efficacy - 0.1),
                                 "unrelated": part(unrelated),
                                 "damage": {"still_correct": locality, "token_agreement": locality,
                                            "perplexity_ratio": 1.0}}},
            "training": {"phase1": {"seconds": seconds}, "phase2": {"seconds": 10.0}}}


def write_study(tmp_path: Path, **extra) -> Path:
    study = {"facts": "examples/facts.jsonl", "out": str(tmp_path / "out"), "seeds": [0, 1],
             "cells": {"a": [], "b": ["phase1.lr=1e-4"]}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(study), encoding="utf-8")  # JSON is YAML
    return path


def test_summary_is_mean_and_spread_of_each_cells_cards(tmp_path, capsys):
    path = write_study(tmp_path)
    planted = {("a", 0): card(0.6, 0.1, 0.9, 100), ("a", 1): card(0.8, 0.3, 0.7, 120),
               ("b", 0): card(0.5, 0.0, 1.0, 50)}  # b seed 1 missing: counted as not run
    for (cell, seed), c in planted.items():
        folder = tmp_path / "out" / cell / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "card.json").write_text(json.dumps(c), encoding="utf-8")
    assert inject_study.main([str(path), "--report-only"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    a, b = summary["cells"]["a"], summary["cells"]["b"]
    assert a["seeds"] == [0, 1] and b["seeds"] == [0]
    assert a["measures"]["efficacy"]["mean"] == pytest.approx(0.7)
    assert a["measures"]["efficacy"]["std"] == pytest.approx(statistics.stdev([0.6, 0.8]))
    assert a["measures"]["unrelated"]["values"] == [0.1, 0.3]
    assert a["measures"]["train_seconds"]["mean"] == pytest.approx(120.0)  # (110 + 130) / 2
    assert b["measures"]["locality"] == {"mean": 1.0, "std": 0.0, "n": 1, "values": [1.0]}
    assert b["overrides"] == ["phase1.lr=1e-4"]
    table = (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")
    assert "| a | 2 | 0.70 ± 0.14 |" in table and "| b | 1 | 0.50 ± 0.00 |" in table
    assert "0.70 ± 0.14" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    ({"epochs": 3}, "unknown key(s) ['epochs']"),
    ({"cells": {"a": "phase1.lr=1e-4"}}, "cells must map each cell name to a list"),
    ({"cells": {}}, "cells must map each cell name to a list"),
    ({"set": "eval.multiple_choice=false"}, "set must be a list of KEY=VALUE overrides"),
])
def test_bad_study_files_are_refused_with_the_offending_value(tmp_path, capsys, extra, message):
    assert inject_study.main([str(write_study(tmp_path, **extra)), "--report-only"]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


def test_an_unknown_cell_is_refused_before_anything_runs(tmp_path, capsys):
    assert inject_study.main([str(write_study(tmp_path)), "--cells", "a,zz"]) != 0
    assert "no cell 'zz'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_published_results_hold_the_summary_and_every_card(tmp_path):
    path = write_study(tmp_path, results=str(tmp_path / "docs"))
    folder = tmp_path / "out" / "a" / "seed1"
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps(card(0.6, 0.1, 0.9, 100)), encoding="utf-8")
    (folder / "card.md").write_text("# card a1\n", encoding="utf-8")
    assert inject_study.main([str(path), "--report-only"]) == 0
    docs = tmp_path / "docs"
    (docs / "gone").mkdir(parents=True)
    (docs / "gone" / "seed0.card.md").write_text("a cell no longer in the study", encoding="utf-8")
    assert inject_study.main([str(path), "--report-only"]) == 0
    assert (docs / "a" / "seed1.card.md").read_text(encoding="utf-8") == "# card a1\n"
    assert not (docs / "gone").exists()
    assert json.loads((docs / "summary.json").read_text(encoding="utf-8"))["cells"]["a"]["seeds"] == [1]


@pytest.mark.parametrize("name", ["locality.yaml", "check.yaml"])
def test_shipped_studies_compare_the_paper_recipe_with_the_defaults(name):
    from rote.injection import PAPER_RECIPE
    study = inject_study.load_study(ROOT / "configs" / "inject" / name)
    assert study["cells"]["paper_recipe"] == list(PAPER_RECIPE)
    assert study["cells"]["defaults"] == []
    assert Path(ROOT / study["facts"]).is_file() and Path(ROOT / study["relations"]).is_file()


def test_the_paper_recipe_turns_every_lever_off(tmp_path):
    """PAPER_RECIPE on top of the injection defaults gives the paper's method: no anchors, every weight."""
    from rote import injection
    from rote.config import PreserveConfig, UpdateConfig
    from rote.data.userdata import load_input
    inp = load_input(str(ROOT / "examples" / "facts.jsonl"), str(ROOT / "examples" / "relations.yaml"), None)
    levers, _, _, _ = injection.plan(inp, tmp_path / "a", "smollm2-135m", [], 0.1)
    paper, _, _, _ = injection.plan(inp, tmp_path / "b", "smollm2-135m", list(injection.PAPER_RECIPE), 0.1)
    assert levers.phase1.preserve != PreserveConfig() and levers.phase2.preserve != PreserveConfig()
    assert levers.phase1.update != UpdateConfig()
    for phase in (paper.phase1, paper.phase2):
        assert phase.preserve.contrast == phase.preserve.replay == phase.preserve.known_facts == 0
        assert phase.update == UpdateConfig()
    assert paper.phase1.lr == 3e-4 and levers.phase1.lr == 2e-4


def _relations_with_train_prompts(tmp_path: Path, n: int) -> Path:
    """examples/relations.yaml with its relation cut to `n` training prompts."""
    import yaml
    raw = yaml.safe_load((ROOT / "examples" / "relations.yaml").read_text(encoding="utf-8"))
    raw["relations"][0]["prompts"]["train"] = raw["relations"][0]["prompts"]["train"][:n]
    path = tmp_path / "relations.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def test_phase2_stops_on_validation_unless_a_relation_has_too_few_prompts(tmp_path):
    from rote import injection
    from rote.data.userdata import load_input
    facts = str(ROOT / "examples" / "facts.jsonl")
    roomy = load_input(facts, str(ROOT / "examples" / "relations.yaml"), None)
    cfg, _, _, notes = injection.plan(roomy, tmp_path / "a", "smollm2-135m", [], 0.1)
    assert cfg.phase2.until == "validation" and not any("validation" in n for n in notes)
    # 6 training prompts: 5 trained, 1 left where 2 are held out -> fixed epochs, and the card says why
    small = load_input(facts, str(_relations_with_train_prompts(tmp_path, 6)), None)
    cfg, _, _, notes = injection.plan(small, tmp_path / "b", "smollm2-135m", [], 0.1)
    assert cfg.phase2.until == "epochs"
    assert any("favourite_instrument has too few training prompts" in n for n in notes)
    # asked for explicitly, it is an error naming the relation, before anything is written
    with pytest.raises(injection.ConfigError, match="relation favourite_instrument has too few"):
        injection.plan(small, tmp_path / "c", "smollm2-135m", ["phase2.until=validation"], 0.1)
    assert not (tmp_path / "c").exists()


def test_cli_paper_recipe_puts_its_overrides_before_the_users(monkeypatch):
    from rote import injection
    from rote.cli import main
    seen = {}

    def fake_inject(facts, **kw):
        seen.update(kw)
        return {"out": "x", "card": {}}
    monkeypatch.setattr(injection, "inject", fake_inject)
    main(["inject", "f.jsonl", "--out", "o", "--paper-recipe", "--set", "phase1.lr=1e-4"])
    assert seen["overrides"] == [*injection.PAPER_RECIPE, "phase1.lr=1e-4"]
    seen.clear()
    main(["inject", "f.jsonl", "--out", "o", "--set", "phase1.lr=1e-4"])
    assert seen["overrides"] == ["phase1.lr=1e-4"]


def test_the_baseline_trains_with_phase_1s_levers_and_no_embedding_row(tmp_path):
    """The method trains only the key tokens' rows; the baseline has no key tokens, so it trains
    no embedding row (key_rows there would be refused) and keeps phase 1's anchors."""
    from rote import injection
    from rote.data.userdata import load_input
    inp = load_input(str(ROOT / "examples" / "facts.jsonl"), str(ROOT / "examples" / "relations.yaml"), None)
    cfg, _, _, _ = injection.plan(inp, tmp_path, "smollm2-135m", [], 0.1)
    for phase in ("phase1", "phase2"):
        (cfg.run_dir / phase).mkdir(parents=True)
        (cfg.run_dir / phase / "summary.json").write_text(json.dumps({"supervised_tokens": 100}), encoding="utf-8")
    base = injection.baseline_config(cfg)
    assert base.arm == "plain_finetune" and base.budget_tokens == 200
    assert base.phase1.update.embeddings == "frozen" and base.phase1.update.modules == ("mlp",)
    assert base.phase1.preserve == cfg.phase1.preserve
    paper, _, _, _ = injection.plan(inp, tmp_path / "p", "smollm2-135m", list(injection.PAPER_RECIPE), 0.1)
    for phase in ("phase1", "phase2"):
        (paper.run_dir / phase).mkdir(parents=True)
        (paper.run_dir / phase / "summary.json").write_text(json.dumps({"supervised_tokens": 100}), encoding="utf-8")
    assert injection.baseline_config(paper).phase1.update.embeddings == "all"
