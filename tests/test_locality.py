"""Damage to general ability, measured at every eval stage: the aggregation against the base model
(hand-made records), that the probes and paragraphs are never trained on, and a tiny-model run
that writes locality.jsonl and the damage block at every planned eval stage."""
import json
import re
from pathlib import Path

import pytest

from rote.evaluation.locality import load_paragraphs, load_probes
from rote.evaluation.metrics import damage_summary

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "rote" / "data"


# ---------------------------------------------------------------- aggregation


def _probe(prompt, correct, argmax, generation=" x"):
    return {"prompt": prompt, "answer": "x", "generation": generation, "correct": correct, "argmax": argmax}


BASE = [_probe("p1", True, [1, 2]), _probe("p2", True, [3]), _probe("p3", False, [4, 5, 6, 7], " y"),
        _probe("p4", False, [8, 9], " z")]
# Per probe, the share of answer positions whose argmax equals the base model's: 0.5, 1, 0.25, 0.
AFTER = [_probe("p4", False, [0, 0], " z"), _probe("p3", False, [4, 0, 0, 0], " w"), _probe("p2", True, [3]),
         _probe("p1", False, [1, 0], " q")]


def test_token_agreement_is_the_mean_over_all_probes_of_each_probes_share():
    d = damage_summary(BASE, AFTER, 20.0, 25.0)
    # over all probes, matched by prompt (not by order): (0.5 + 1 + 0.25 + 0) / 4. Computed on the
    # base-correct probes only it would be 0.75; pooled over tokens 3 / 9; in list order 0.25.
    assert d["token_agreement"] == pytest.approx(0.4375)
    assert d["probes"] == 4 and d["base_correct"] == 2 and d["still_correct"] == 0.5
    assert d["unchanged"] == 0.5  # p2 and p4 generate what they did
    assert d["lost"] == [{"prompt": "p1", "answer": "x", "now": " q"}]
    assert list(d) == ["probes", "base_correct", "still_correct", "unchanged", "token_agreement", "perplexity",
                       "perplexity_ratio", "lost"]


def test_perplexity_ratio_is_the_stage_over_the_base_model():
    assert damage_summary(BASE, AFTER, 20.0, 25.0)["perplexity_ratio"] == 1.25
    assert damage_summary(BASE, AFTER, 25.0, 20.0)["perplexity_ratio"] == 0.8
    reference = damage_summary(BASE, BASE, 20.0, 20.0)  # eval/base against itself
    assert (reference["token_agreement"], reference["perplexity_ratio"], reference["still_correct"]) == (1.0, 1.0, 1.0)
    # no base measurement (a run written before eval/base always ran): nothing to compare with
    alone = damage_summary([], AFTER, None, 20.0)
    assert alone["perplexity_ratio"] is None and alone["token_agreement"] is None and alone["perplexity"] == 20.0


# ---------------------------------------------------------------- never trained on


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def training_sources() -> dict[str, str]:
    """Every shipped text a run or an injection can train on: the relation files (built-in, the
    repurposing study's, the example's), examples/, and the other data files of rote.data (the
    levers' contrast, known facts and replay text among them). The probes and paragraphs are not."""
    paths = [p for p in DATA.rglob("*") if p.suffix in (".yaml", ".txt", ".jsonl", ".json")
             and p.name not in ("locality.yaml", "paragraphs.txt")]
    paths += list((ROOT / "configs" / "relations").glob("*.yaml")) + list((ROOT / "examples").glob("*"))
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths if p.is_file()}


def leaks(sources: dict[str, str]) -> list[str]:
    """A locality probe's prompt, or a sentence (6+ words) of a perplexity paragraph, found in a source."""
    texts = {name: _norm(text) for name, text in sources.items()}
    needles = [p["prompt"] for p in load_probes()]
    needles += [s for par in load_paragraphs() for s in re.split(r"(?<=[.;:!?])\s+", par) if len(s.split()) >= 6]
    return [f"{name}: {needle[:60]!r}" for needle in needles for name, text in texts.items() if _norm(needle) in text]


def test_probes_and_paragraphs_are_never_training_text():
    sources = training_sources()
    assert any("relations" in name for name in sources) and any(name.startswith("examples") for name in sources)
    assert not leaks(sources)


def test_the_leak_check_can_fail():
    probe, paragraph = load_probes()[3], load_paragraphs()[1]
    planted = {"examples/planted.jsonl": json.dumps({"subject": "A", "relation": "r", "object": "B",
                                                     "prompt": "  " + probe["prompt"].upper()}),
               "planted_replay.txt": "Some prose.\n" + paragraph.replace(" ", "\n", 3)}
    found = leaks({**training_sources(), **planted})
    assert any(f.startswith("examples/planted.jsonl") for f in found)
    assert any(f.startswith("planted_replay.txt") for f in found)


# ---------------------------------------------------------------- every run measures it


@pytest.mark.slow
def test_a_run_measures_damage_at_every_planned_eval_stage(tiny_model_dir, tmp_path):
    """eval/base runs even when eval.stages leaves base out (it then asks no facts), and each
    eval stage writes locality.jsonl and its damage block against eval/base."""
    from rote import config
    from rote.fileio import read_json, read_jsonl
    from rote.report.headline import format_headline
    from rote.runner import run
    cfg = config.load(ROOT / "configs" / "smoke.yaml", [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}",
                                                        "eval.stages=[phase1, phase2]", "eval.prompts_per_set=1",
                                                        "eval.multiple_choice=false"])
    run_dir = run(cfg, quiet=True)
    probes = len(load_probes())
    for stage in ("base", "phase1", "phase2"):
        folder = run_dir / "eval" / stage
        records = read_jsonl(folder / "locality.jsonl")
        assert [r["prompt"] for r in records] == [p["prompt"] for p in load_probes()]
        assert all(r["argmax"] and all(isinstance(i, int) for i in r["argmax"]) for r in records)
        damage = read_json(folder / "summary.json")["damage"]
        assert damage["probes"] == probes and damage["perplexity"] > 0, stage
        assert 0 <= damage["token_agreement"] <= 1 and damage["perplexity_ratio"] > 0
        assert "seconds" not in read_json(folder / "summary.json")  # wall-clock lives in timing.json
        assert read_json(folder / "timing.json")["damage_seconds"] >= 0
    base = read_json(run_dir / "eval/base/summary.json")
    assert "rows" not in base and "damage only" in base["facts"] and not (run_dir / "eval/base/predictions.jsonl").exists()
    assert base["damage"]["token_agreement"] == 1.0 and base["damage"]["perplexity_ratio"] == 1.0
    text = format_headline(run_dir)
    assert "Damage to general ability" in text and "token agreement" in text
    assert "base (not in config; damage measured)" in text
