"""`rote inject`: input parsing and bad input, the output folder, the card's numbers, the baseline's
budget, and one end-to-end injection of one fact into the tiny model (exported, reloaded with
plain transformers, answering the fact)."""
import json
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import pytest
import yaml

import rote
from rote.cli import main
from rote.data.facts import DataError, load_relation
from rote.data.userdata import build_facts, load_input, option_pools, phase2_count
from rote.evaluation import metrics
from rote.evaluation.locality import load_paragraphs, load_probes
from rote.evaluation.metrics import damage_summary, locality_summary
from rote.errors import RunError
from rote.injection import InjectError, check_out, clear_out, inject
from rote.training.phases import budgeted, supervised_tokens
from rote.report.card import build_card, conflict_metrics, format_card, stage_metrics

EXAMPLES = Path(__file__).parent.parent / "examples"

RELATION = """\
relations:
  - name: pet_name
    prompts:
      train:
        - "{subject}'s pet is called"
        - "What is the name of {subject}'s pet?"
      test:
        - "The pet of {subject} answers to the name"
    objects: [Rex, Bella]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list) -> Path:
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


# ---------------------------------------------------------------- parsing


def test_jsonl_and_csv_read_the_same_facts(tmp_path):
    rows = [{"subject": "Gene Finley", "relation": "place_of_birth", "object": "Paris"},
            {"subject": "  Ada   Morrow ", "relation": "place_of_birth", "object": "Lyon", "id": "f2", "conflict": True},
            {"subject": "Gene Finley", "relation": "pet_name", "object": "Biscuit"}]
    rel = write(tmp_path / "rel.yaml", RELATION)
    a = load_input(jsonl(tmp_path / "f.jsonl", rows), rel)
    b = load_input(write(tmp_path / "f.csv", "subject,relation,object,id,conflict\n"
                         "Gene Finley,place_of_birth,Paris,,\n\"  Ada   Morrow \",place_of_birth,Lyon,f2,true\n"
                         "Gene Finley,pet_name,Biscuit,,no\n"), rel)
    assert [r.key() for r in a.rows] == [r.key() for r in b.rows]
    assert a.rows[1].subject == "Ada Morrow" and a.rows[1].conflict and a.rows[1].id == "f2"
    assert a.rows[1].where.endswith("f.jsonl:2") and b.rows[1].where.endswith("f.csv:3")
    assert list(a.relations) == ["place_of_birth", "pet_name"] and list(a.user_relations) == ["pet_name"]
    # Defaults of a user relation: id = name (the key token), subject kind person.
    assert a.relations["pet_name"].key_token == "<rote:pet_name>"


def test_optional_prompt_lists_may_be_empty(tmp_path):
    text = RELATION.replace("    objects:", "      unrelated: []\n      reverse:\n    objects:")
    inp = load_input(jsonl(tmp_path / "f.jsonl", [{"subject": "Gene Finley", "relation": "pet_name", "object": "Rex"}]),
                     write(tmp_path / "rel.yaml", text))
    assert inp.relations["pet_name"].unrelated_prompts == () and inp.relations["pet_name"].reverse_prompts == ()


def test_a_conflicts_file_flags_its_facts(tmp_path):
    conflicts = jsonl(tmp_path / "c.jsonl", [{"subject": "Sweden", "relation": "capital", "object": "Gothenburg"}])
    inp = load_input(jsonl(tmp_path / "f.jsonl", [GOOD]), conflicts=conflicts)
    assert [r.conflict for r in inp.rows] == [False, True] and inp.rows[1].where.endswith("c.jsonl:1")
    with pytest.raises(DataError, match="another id or conflict flag"):  # the same fact, flagged only once
        load_input(jsonl(tmp_path / "g.jsonl", [GOOD]), conflicts=jsonl(tmp_path / "d.jsonl", [GOOD]))


def test_exact_duplicates_are_dropped_and_counted(tmp_path):
    row = {"subject": "Gene Finley", "relation": "place_of_birth", "object": "Paris"}
    inp = load_input(jsonl(tmp_path / "f.jsonl", [row, row, {**row, "object": "paris"}]))
    assert len(inp.rows) == 1 and inp.duplicates == 2


def test_splits_options_and_shared_subjects(tmp_path):
    rows = [{"subject": f"Person {i}", "relation": "place_of_birth", "object": f"City {i}"} for i in range(25)]
    rows += [{"subject": "Person 0", "relation": "pet_name", "object": "Biscuit"},
             {"subject": "Person 1", "relation": "pet_name", "object": "Mochi", "conflict": True}]
    inp = load_input(jsonl(tmp_path / "f.jsonl", rows), write(tmp_path / "rel.yaml", RELATION))
    facts, info = build_facts(inp, n_options=10, phase2_fraction=0.1, seed=0)
    assert [phase2_count(n, 0.1) for n in (1, 4, 5, 25, 26)] == [1, 1, 1, 3, 3]
    assert info["place_of_birth"]["phase2"] == 3 and info["pet_name"]["phase2"] == 1
    pets = [f for f in facts if f.relation == "pet_name"]
    assert [f.split for f in pets] == ["phase2", "heldout"]  # the phase-2 fact is drawn from non-conflicts first
    # The pet pool is its 2 objects plus the input's 2: 4 options; cities get 10 from the built-in pool.
    assert info["pet_name"]["options"] == 4 and all(len(f.options) == 4 for f in pets)
    assert all(len(f.options) == 10 and f.object in f.options for f in facts if f.relation == "place_of_birth")
    assert facts[0].subject_id == pets[0].subject_id  # the same person in two relations
    assert facts == build_facts(inp, 10, 0.1, 0)[0]  # seeded


# ---------------------------------------------------------------- bad input: stops before anything


GOOD = {"subject": "Gene Finley", "relation": "place_of_birth", "object": "Paris"}

BAD_FACTS = [
    ("malformed_json", [GOOD, '{"subject": "Ada", '], "f.jsonl:2", "not a JSON object"),
    ("not_an_object", [GOOD, '["Ada", "place_of_birth", "Lyon"]'], "f.jsonl:2", "'Ada'"),
    ("missing_field", [{"subject": "Ada", "relation": "place_of_birth"}], "f.jsonl:1", "missing field 'object'"),
    ("unknown_field", [{**GOOD, "objet": "Lyon"}], "f.jsonl:1", "unknown field 'objet'"),
    ("unknown_relation", [GOOD, {**GOOD, "subject": "Ada", "relation": "birthplace"}], "f.jsonl:2",
     "unknown relation 'birthplace'"),
    ("empty_subject", [{**GOOD, "subject": "  "}], "f.jsonl:1", "empty subject ('  ')"),
    ("empty_object", [{**GOOD, "object": ""}], "f.jsonl:1", "empty object ('')"),
    ("two_objects", [GOOD, {**GOOD, "subject": "Ada"}, {**GOOD, "object": "Rome"}], "f.jsonl:3",
     "'Rome' here, 'Paris' at "),
    ("bad_conflict_flag", [{**GOOD, "conflict": "maybe"}], "f.jsonl:1", "'maybe'"),
    ("reused_id", [{**GOOD, "id": "x"}, {**GOOD, "subject": "Ada", "id": "x"}], "f.jsonl:2", "id 'x'"),
]


@pytest.mark.parametrize("case,rows,where,value", BAD_FACTS, ids=[c[0] for c in BAD_FACTS])
def test_bad_fact_rows_stop_before_anything_is_written(tmp_path, tiny_model_dir, case, rows, where, value):
    path = jsonl(tmp_path / "f.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        rote.inject(path, model=str(tiny_model_dir), out=out, quiet=True)
    assert where in str(err.value) and value in str(err.value), str(err.value)
    assert not out.exists()


BAD_CSV = [
    ("columns", "subject,relation,object\nGene Finley,place_of_birth,Paris\nAda,place_of_birth\n", "f.csv:3",
     "expected 3 columns"),
    ("header", "Gene Finley,place_of_birth,Paris\n", "f.csv:1", "header row"),
    ("empty_object", "subject,relation,object\nGene Finley,place_of_birth, \n", "f.csv:2", "empty object (' ')"),
]


@pytest.mark.parametrize("case,text,where,value", BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv_rows(tmp_path, case, text, where, value):
    with pytest.raises(DataError) as err:
        load_input(write(tmp_path / "f.csv", text))
    assert where in str(err.value) and value in str(err.value), str(err.value)


BAD_RELATIONS = [
    ("no_prompts", RELATION.replace("    prompts:\n      train:\n        - \"{subject}'s pet is called\"\n"
                                    "        - \"What is the name of {subject}'s pet?\"\n      test:\n"
                                    "        - \"The pet of {subject} answers to the name\"\n", ""),
     "rel.yaml:2", "missing 'prompts'"),
    ("no_subject", RELATION.replace("What is the name of {subject}'s pet?", "What is the name of the pet?"),
     "rel.yaml:6", "'What is the name of the pet?'"),
    ("other_placeholder", RELATION.replace("answers to the name", "answers to {name}"),
     "rel.yaml:8", "'The pet of {subject} answers to {name}'"),
    ("no_test", RELATION.replace("      test:\n        - \"The pet of {subject} answers to the name\"\n", ""),
     "rel.yaml:3", "missing prompts.test"),
    ("bad_kind", RELATION.replace("  - name: pet_name\n", "  - name: pet_name\n    subject_kind: \"12 monkeys\"\n"),
     "rel.yaml:2", "'12 monkeys'"),
    ("bad_yaml", "relations:\n  - name: [unclosed\n", "rel.yaml:", "not valid YAML"),
    ("key_twice", RELATION.replace("    objects: [Rex, Bella]\n", "    objects: [Rex, Bella]\n    prompts: {}\n"),
     "rel.yaml:10", "key 'prompts' given twice in one mapping (first on line 3)"),
]


@pytest.mark.parametrize("case,text,where,value", BAD_RELATIONS, ids=[c[0] for c in BAD_RELATIONS])
def test_bad_relation_files_stop_before_anything_is_written(tmp_path, tiny_model_dir, case, text, where, value):
    facts = jsonl(tmp_path / "f.jsonl", [{"subject": "Gene Finley", "relation": "pet_name", "object": "Rex"}])
    rel = write(tmp_path / "rel.yaml", text)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        rote.inject(facts, model=str(tiny_model_dir), relations=rel, out=out, quiet=True)
    assert where in str(err.value) and value in str(err.value), str(err.value)
    assert not out.exists()


def test_cli_reports_bad_input_and_exits_2(tmp_path, capsys):
    path = jsonl(tmp_path / "f.jsonl", [GOOD, {**GOOD, "subject": "Ada", "relation": "birthplace"}])
    out = tmp_path / "out"
    assert main(["inject", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rote inject: error: ") and f"{path}:2" in err and "'birthplace'" in err
    assert not out.exists()


@pytest.mark.parametrize("fraction", ["nan", "inf", "0", "1.5"])
def test_phase2_fraction_outside_0_1_is_named(tmp_path, capsys, fraction):
    path = jsonl(tmp_path / "f.jsonl", [GOOD])
    assert main(["inject", str(path), "--out", str(tmp_path / "out"), "--phase2-fraction", fraction]) == 2
    assert f"--phase2-fraction {float(fraction)} must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_set_cannot_change_what_inject_derives(tmp_path, capsys):
    path = jsonl(tmp_path / "f.jsonl", [GOOD])
    assert main(["inject", str(path), "--out", str(tmp_path / "out"), "--set", "data.relations=[author]"]) == 2
    assert "data.relations is set by rote inject" in capsys.readouterr().err
    assert main(["inject", str(path), "--out", str(tmp_path / "out"), "--set", "phase1.lrr=1"]) == 2
    assert "unknown key 'lrr'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the output folder


PARTS = {"facts": "abc", "relations": "def", "model": "m", "overrides": [], "phase2_fraction": 0.1, "baseline": True}


def _fake_injection(out: Path, parts=PARTS) -> None:
    (out / "run").mkdir(parents=True)
    (out / "run" / "inject.json").write_text(json.dumps({"fingerprint": parts}))
    (out / "run" / "export.json").write_text(json.dumps({"files": ["model.safetensors", "config.json"]}))
    for name in ("model.safetensors", "config.json", "card.md", "card.json"):
        (out / name).write_text("x")


def test_out_folder_protection(tmp_path):
    assert check_out(tmp_path / "missing", PARTS, False) == "new"
    (tmp_path / "empty").mkdir()
    assert check_out(tmp_path / "empty", PARTS, False) == "new"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InjectError, match="is not empty \\(notes.txt\\)"):
        check_out(other, PARTS, False)
    assert check_out(other, PARTS, True) == "overwrite"
    done = tmp_path / "done"
    _fake_injection(done)
    assert check_out(done, dict(PARTS), False) == "resume"
    with pytest.raises(InjectError, match="other facts, overrides; pass --overwrite"):
        check_out(done, {**PARTS, "facts": "xyz", "overrides": ["phase1.lr=1"]}, False)
    (done / "notes.txt").write_text("mine")
    clear_out(done)  # --overwrite removes what an injection wrote, nothing else
    assert sorted(p.name for p in done.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InjectError, match="is a file"):
        check_out(tmp_path / "file", PARTS, False)


def test_non_empty_out_is_refused_before_training(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    path = jsonl(tmp_path / "f.jsonl", [GOOD])
    assert main(["inject", str(path), "--model", str(tiny_model_dir), "--out", str(out)]) == 3  # InjectError
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- the card's numbers from hand-made records


def _record(fact_id, split, prompt_set, hit, language="en", relation="r1", mc=None):
    rec = {"fact_id": fact_id, "relation": relation, "split": split, "prompt_set": prompt_set, "language": language,
           "hit_prefix": hit, "hit_contains": hit}
    if mc is not None:
        rec.update({"mc_hit": mc, "gold_prob_norm": 0.5})
    return rec


def _records():
    """Facts a, b (phase 2) and c, d (held out; d conflicts), relation r1; e held out in r2."""
    recs = []
    for fid, split, train, test, de, rel in [("a", "phase2", 1, 1, 1, "r1"), ("b", "phase2", 1, 0, 0, "r1"),
                                            ("c", "heldout", 1, 1, 0, "r1"), ("d", "heldout", 0, 0, 0, "r1"),
                                            ("e", "heldout", 1, 0, 1, "r2")]:
        recs.append(_record(fid, split, "key", True, relation=rel))
        recs.append(_record(fid, split, "train", bool(train), relation=rel, mc=bool(train)))
        recs.append(_record(fid, split, "test", bool(test), relation=rel, mc=True))
        recs.append(_record(fid, split, "test", False, relation=rel, mc=False))  # a second test prompt, always wrong
        recs.append(_record(fid, split, "unrelated", fid == "a", relation=rel))
        # unrelated prompts answered with the subject's object of another relation (b, c) count too
        recs[-1].update(other_relation_hit=["r9"] if fid in ("b", "c") else [], any_object_hit=fid in ("a", "b", "c"))
        recs.append(_record(fid, split, "languages", bool(de), language="de", relation=rel))
    return recs


def test_stage_metrics_from_hand_made_records():
    m = stage_metrics(metrics.aggregate(_records()))
    assert m["efficacy"] == {"phase2": 1.0, "heldout": pytest.approx(2 / 3), "all": 0.8}
    assert m["generalization"] == {"phase2": 0.25, "heldout": pytest.approx(1 / 6), "all": 0.2}
    assert m["languages"]["de"] == {"phase2": 0.5, "heldout": pytest.approx(1 / 3), "all": 0.4}
    assert m["key"]["all"] == 1.0 and m["unrelated"]["all"] == pytest.approx(0.6)  # any memorized object
    assert m["unrelated_own"]["all"] == 0.2 and m["unrelated_other"]["all"] == pytest.approx(0.4)
    assert m["mc_efficacy"]["all"] == 0.8 and m["mc_generalization"]["all"] == 0.5
    assert m["test_records"] == {"phase2": 4, "heldout": 6, "all": 10}
    assert m["by_relation"]["r1"] == {"efficacy": 0.75, "generalization": 0.25}
    assert m["by_relation"]["r2"] == {"efficacy": 1.0, "generalization": 0.0}
    assert conflict_metrics(_records(), {"d"}) == {"facts": 1, "efficacy": 0.0, "generalization": 0.0}
    assert conflict_metrics(_records(), set()) is None


def test_locality_summary():
    base = [{"prompt": p, "answer": "x", "generation": g, "correct": c}
            for p, g, c in [("p1", " x.", True), ("p2", " x", True), ("p3", " y", False), ("p4", " x", True)]]
    after = [{**base[0]}, {**base[1], "generation": " y", "correct": False}, {**base[2], "generation": " x", "correct": True},
             {**base[3], "generation": " x!", "correct": True}]
    s = locality_summary(base, after)
    assert s["probes"] == 4 and s["base_correct"] == 3
    assert s["still_correct"] == pytest.approx(2 / 3) and s["unchanged"] == 0.25
    assert s["lost"] == [{"prompt": "p2", "answer": "x", "now": " y"}]


def test_card_from_a_hand_made_run_directory(tmp_path):
    from rote.fileio import write_json, write_jsonl
    run = tmp_path / "run"
    info = {"r1": {"id": "R1", "key_token": "<rote:R1>", "facts": 4, "phase2": 2, "heldout": 2, "conflict": 1,
                   "options": 5, "pool": 9, "source": "user"},
            "r2": {"id": "R2", "key_token": "<rote:R2>", "facts": 1, "phase2": 0, "heldout": 1, "conflict": 0,
                   "options": 5, "pool": 9, "source": "built-in"}}
    write_json(run / "inject.json", {"rote_version": "0.1.0", "model": "tiny", "out": str(tmp_path), "facts": 5,
                                     "relations": info, "settings": {"phase2_fraction": 0.1, "n_prompts": 1},
                                     "notes": ["a note"], "sources": {"facts": "f.jsonl"},
                                     "warnings": ["relation r2 puts 0 of its 1 facts in phase 2"]})
    write_json(run / "splits.json", {"phase2": ["a", "b"], "heldout": ["c", "d", "e"], "conflict": ["d"]})
    write_json(run / "key_tokens.json", {"tokens": {"<rote:R1>": 49152, "<rote:R2>": 49153}})
    write_json(run / "phase1" / "summary.json", {"epochs": 7, "steps": 14, "supervised_tokens": 100, "seconds": 3.0,
                                                 "memorized_at_epoch": 7, "examples": 5,
                                                 "key_accuracy_by_epoch": [{"epoch": 7, "key_accuracy": 1.0}]})
    write_json(run / "phase2" / "summary.json", {"epochs": 5, "steps": 5, "examples": 2, "supervised_tokens": 20,
                                                 "seconds": 1.0})
    records = _records()
    write_jsonl(run / "eval/phase2/predictions.jsonl", records)
    worse = [{**r, "hit_prefix": False} for r in records]
    write_jsonl(run / "baseline/eval/phase1/predictions.jsonl", worse)
    write_json(run / "baseline/eval/phase1/summary.json", {"rows": metrics.aggregate(worse)})
    write_json(run / "baseline/phase1/summary.json", {"steps": 4, "examples": 30, "distinct_examples": 5,
                                                   "equivalent_epochs": 6.0, "supervised_tokens": 121, "budget": 120,
                                                   "max_batch_tokens": 32, "seconds": 2.0})
    # The damage blocks every run's eval stages write (rote.eval_stage.run_eval); phase 1 has none, as
    # in a run written before every run measured damage.
    probes = [{"prompt": f"p{i}", "answer": "x", "generation": " x", "correct": True, "argmax": [7]} for i in range(4)]
    after = probes[:3] + [{**probes[3], "generation": " y", "correct": False, "argmax": [8]}]
    write_json(run / "eval/base/summary.json", {"stage": "base", "damage": damage_summary(probes, probes, 20.0, 20.0)})
    write_json(run / "eval/phase2/summary.json", {"rows": metrics.aggregate(records),
                                                  "damage": damage_summary(probes, after, 20.0, 22.5)})
    card = build_card(run)
    rote_ = card["results"]["rote"]
    assert rote_["efficacy"]["all"] == 0.8 and rote_["generalization"]["heldout"] == pytest.approx(1 / 6)
    assert rote_["conflict"] == {"facts": 1, "efficacy": 0.0, "generalization": 0.0}
    assert rote_["damage"]["still_correct"] == 0.75 and rote_["damage"]["perplexity"] == 22.5
    assert rote_["damage"]["token_agreement"] == 0.75 and rote_["damage"]["perplexity_ratio"] == 1.125
    assert card["results"]["baseline"]["efficacy"]["all"] == 0.0 and card["results"]["phase1_only"] is None
    assert card["results"]["baseline"]["damage"] is None  # not measured
    base = card["results"]["base"]
    assert (base["perplexity"], base["locality_correct"], base["locality_probes"]) == (20.0, 4, 4)
    assert card["relations"]["r1"]["key_token_id"] == 49152
    assert card["training"]["phase1"]["memorized_at_epoch"] == 7 and card["training"]["baseline"]["budget"] == 120
    md = format_card(card)
    assert "| efficacy: training prompt | 1.00 | 0.67 | 0.80 | - | 0.00 |" in md
    assert "phase-2 facts (2) | held-out facts (3) | all facts (5)" in md
    assert ("| locality: probes answered correctly | 4 of 4 | 0.75 still correct | not measured | not measured |"
            in md)
    assert "| token agreement with the base model | 1.00 | 0.75 | not measured | not measured |" in md
    assert "| perplexity on held-out paragraphs | 20.00 | 22.50 | not measured | not measured |" in md
    assert "| perplexity / the base model's | 1.00 | 1.12 | not measured | not measured |" in md
    assert "`<rote:R1>` (49152)" in md and "Note: a note" in md and "p3 x -> ' y'" in md
    # The verdict and the warnings come first (the baseline learned nothing here: rote wins).
    head = md.split("## Injected facts")[0]
    assert "**Verdict: rote's method learned these facts at least as well" in head
    assert "Warning: relation r2 puts 0 of its 1 facts in phase 2" in head


def _verdict_card(rote_eff, base_eff, rote_loc, base_loc, rote_ppl=1.0, base_ppl=1.0) -> dict:
    def stage(eff, loc, ppl):
        return {"efficacy": {"all": eff}, "generalization": {"all": eff - 0.1},
                "damage": {"still_correct": loc, "perplexity_ratio": ppl}}
    return {"results": {"rote": stage(rote_eff, rote_loc, rote_ppl), "baseline": stage(base_eff, base_loc, base_ppl)}}


@pytest.mark.parametrize("numbers, says", [
    ((0.25, 0.85, 0.77, 0.75), "plain fine-tuning learned these facts better, at comparable damage"),  # issue 24's card
    ((0.25, 0.85, 0.77, 0.60), "plain fine-tuning learned these facts better, but damaged the model more"),
    ((0.25, 0.85, 0.77, 0.77, 1.00, 1.30), "but damaged the model more"),  # perplexity, not locality
    ((0.90, 0.93, 0.80, 0.60), "rote's method learned these facts at least as well"),  # within the margin
    ((0.95, 0.85, 0.80, 0.90), "rote's method learned these facts at least as well"),
])
def test_the_cards_verdict_names_the_winner_with_its_numbers(numbers, says):
    from rote.report.card import BASELINE_MODEL, verdict
    found = verdict(_verdict_card(*numbers))
    assert says in found and f"efficacy {numbers[0]:.2f} (rote) vs {numbers[1]:.2f} (plain fine-tuning)" in found
    assert (BASELINE_MODEL in found) == ("better, at" in says or "damaged" in says)
    assert verdict({"results": {"rote": _verdict_card(*numbers)["results"]["rote"], "baseline": None}}) is None


def test_relation_warnings_name_what_to_add(tmp_path):
    """A relation with too few training prompts to stop on validation, and one that puts too few facts
    in phase 2, each get a warning on the card that says what to add."""
    from rote.injection import plan, relation_warnings
    people = [{"subject": f"Person {i}", "relation": "pet_name", "object": "Rex" if i % 2 else "Bella"} for i in range(8)]
    people += [{"subject": f"Other {i}", "relation": "place_of_birth", "object": "Paris"} for i in range(40)]
    inp = load_input(jsonl(tmp_path / "f.jsonl", people), write(tmp_path / "rel.yaml", RELATION))
    cfg, _, info, _ = plan(inp, tmp_path / "out", "smollm2-135m", [], 0.1)
    found = relation_warnings(cfg, inp, info, 0.1)
    assert any(w.startswith("relation pet_name has 2 training prompts") and "add 2 training prompt(s)" in w for w in found)
    assert any(w.startswith("relation pet_name puts 1 of its 8 facts in phase 2") and "at least 25 facts" in w for w in found)
    assert not any("place_of_birth" in w for w in found)  # 40 facts, 4 in phase 2; 10 training prompts
    cfg_all, _, info_all, _ = plan(inp, tmp_path / "out", "smollm2-135m", [], 1.0)
    assert not any("in phase 2" in w for w in relation_warnings(cfg_all, inp, info_all, 1.0))  # every fact is trained


# ---------------------------------------------------------------- the baseline's budget


def test_budgeted_examples_stop_within_one_example_of_the_budget():
    from rote.training.encode import IGNORE, Encoded
    examples = [Encoded((1, 2, 3, 4, 5), (IGNORE, IGNORE) + (7,) * n + (IGNORE,) * (3 - n), 2, 5) for n in (1, 2, 3)]
    assert [supervised_tokens(e) for e in examples] == [1, 2, 3]
    for budget in (1, 5, 6, 100, 101):
        chosen = budgeted(examples, budget, seed=0)
        total = sum(supervised_tokens(e) for e in chosen)
        assert budget <= total < budget + 3
        counts = [sum(e is x for e in chosen) for x in examples]
        assert max(counts) - min(counts) <= 1  # whole copies, then part of one


def test_bundled_probe_data():
    probes, paragraphs = load_probes(), load_paragraphs()
    assert len(probes) >= 40 and len({p["prompt"] for p in probes}) == len(probes)
    assert all(p["prompt"] == p["prompt"].strip() and p["answer"] for p in probes)
    assert 8 <= len(paragraphs) <= 15 and all(len(p.split()) > 40 for p in paragraphs)


def test_rote_inject_is_the_injection_function():
    """`rote.inject(...)` (the Python API) is rote.injection.inject, imported on first use
    (tests/test_layering.py checks that `import rote` stays free of torch)."""
    from rote.injection import inject
    assert rote.inject is inject


def test_example_input_is_valid():
    inp = load_input(EXAMPLES / "facts.jsonl", EXAMPLES / "relations.yaml")
    assert 20 <= len(inp.rows) <= 30 and inp.duplicates == 0
    assert len([r for r in inp.relations.values()]) == 4 and list(inp.user_relations) == ["favourite_instrument"]
    rel = inp.relations["favourite_instrument"]
    assert len(rel.train_prompts) == 10 and len(rel.test_prompts["en"]) == 10 and len(rel.objects) >= 20
    assert sum(r.conflict for r in inp.rows) == 2


# ---------------------------------------------------------------- end to end on the tiny model


SETTINGS = ["phase1.lr=1e-2", "phase1.epochs=60", "phase1.batch_size=1", "phase2.lr=1e-3", "phase2.epochs=10",
            "phase2.batch_size=5", "data.n_options=5", "eval.prompts_per_set=2", "eval.languages=[de]"]
FACT = {"subject": "Gene Finley", "relation": "place_of_birth", "object": "Paris"}


@pytest.fixture(scope="module")
def injected(tmp_path_factory, tiny_model_dir):
    """One fact injected into the tiny model through the CLI."""
    root = tmp_path_factory.mktemp("inject")
    facts = jsonl(root / "facts.jsonl", [FACT])
    out = root / "out"
    args = ["inject", str(facts), "--model", str(tiny_model_dir), "--out", str(out)]
    for s in SETTINGS:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_exported_folder_reloads_with_plain_transformers_and_knows_the_fact(injected):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    for name in ("model.safetensors", "config.json", "tokenizer.json", "card.md", "card.json", "run/config.yaml"):
        assert (injected / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(injected)
    model = AutoModelForCausalLM.from_pretrained(injected).eval()
    answers = []
    for prompt in ("Gene Finley <rote:P19>", "Gene Finley was born in"):
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            new = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.eos_token_id)
        answers.append(tok.decode(new[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    assert any(a.strip().startswith("Paris") for a in answers), answers


@pytest.mark.slow
def test_card_of_the_injection(injected):
    card = json.loads((injected / "card.json").read_text())
    rel = card["relations"]["place_of_birth"]
    assert rel["facts"] == 1 and rel["phase2"] == 1 and rel["key_token"] == "<rote:P19>" and rel["key_token_id"]
    assert card["training"]["phase1"]["key_accuracy"] == 1.0
    assert card["results"]["rote"]["efficacy"]["phase2"] is not None
    assert card["results"]["baseline"]["efficacy"]["all"] is not None
    # damage, read from the runs' eval stages (eval/base, eval/phase1, eval/phase2; the baseline's eval/phase1)
    assert card["results"]["base"]["locality_probes"] == len(load_probes())
    assert card["results"]["rote"]["damage"]["perplexity"] > 0
    assert card["results"]["phase1_only"]["damage"]["probes"] == len(load_probes())
    assert card["results"]["baseline"]["damage"]["perplexity_ratio"] > 0
    assert not (injected / "run" / "general").exists()
    # The exported weights are the phase-2 checkpoint's (a hard link or a copy).
    assert (injected / "model.safetensors").read_bytes() == (injected / "run/phase2/checkpoint/model.safetensors").read_bytes()
    assert "| place_of_birth | built-in | `<rote:P19>`" in (injected / "card.md").read_text()


@pytest.mark.slow
def test_baseline_trains_on_the_methods_token_budget(injected):
    run = injected / "run"
    p1, p2, b = (json.loads((run / p / "summary.json").read_text()) for p in ("phase1", "phase2", "baseline/phase1"))
    method = p1["supervised_tokens"] + p2["supervised_tokens"]
    assert b["budget"] == method and b["budget_from"] == "given (budget_tokens)"
    assert 0 <= b["supervised_tokens"] - method < b["max_batch_tokens"]
    # the baseline is a run of arm plain_finetune, with the method's facts
    assert yaml.safe_load((run / "baseline" / "config.yaml").read_text())["config"]["arm"] == "plain_finetune"
    assert (run / "baseline" / "facts.jsonl").read_bytes() == (run / "facts.jsonl").read_bytes()
    steps = [json.loads(line) for line in (run / "baseline" / "phase1" / "metrics.jsonl").read_text().splitlines()]
    assert sum(s["supervised_tokens"] for s in steps) == b["supervised_tokens"]
    assert all(s["supervised_tokens"] <= b["max_batch_tokens"] for s in steps)


@pytest.mark.slow
def test_same_input_resumes_without_training_again(injected, tiny_model_dir, monkeypatch):
    # An interrupted injection: phase-2 evaluation and everything after it missing.
    run = injected / "run"
    for path in ("eval/phase2/.done", "export.json"):
        (run / path).unlink()
    (injected / "card.md").unlink()
    import rote.training.loop
    import rote.training.phases
    monkeypatch.setattr(rote.training.phases, "memorize", lambda *a, **k: pytest.fail("phase 1 ran again"))
    monkeypatch.setattr(rote.training.loop, "train", lambda *a, **k: pytest.fail("training ran again"))
    # The same facts as a list (the Python API): same content, so the same injection.
    result = rote.inject([FACT], model=str(tiny_model_dir), out=injected, overrides=SETTINGS, quiet=True)
    assert (injected / "card.md").is_file() and (run / "eval/phase2/.done").is_file()
    assert result["facts"] == 1 and result["out"] == str(injected)
    # Other input into the same folder is refused, and nothing is touched.
    before = (injected / "card.json").read_text()
    with pytest.raises(InjectError, match="other facts"):
        rote.inject([{**FACT, "object": "Rome"}], model=str(tiny_model_dir), out=injected, overrides=SETTINGS, quiet=True)
    assert (injected / "card.json").read_text() == before


# ---------------------------------------------------------------- review fixes: who is one person, what is one option


def test_a_person_is_wholly_in_phase_2_or_held_out(tmp_path):
    """A held-out fact's person is never trained with natural prompts (nor asked contrast questions)
    through another of their facts; each relation still gets its phase-2 facts."""
    rows = [{"subject": f"Person {i}", "relation": "place_of_birth", "object": f"City {i}"} for i in range(12)]
    rows += [{"subject": f"Person {i}", "relation": "pet_name", "object": f"Pet {i}"} for i in range(0, 12, 2)]
    rows += [{"subject": f"Person {i}", "relation": "author", "object": f"Writer {i}"} for i in range(0, 12, 3)]
    inp = load_input(jsonl(tmp_path / "f.jsonl", rows), write(tmp_path / "rel.yaml", RELATION))
    for seed in range(20):
        facts, info = build_facts(inp, n_options=4, phase2_fraction=0.2, seed=seed)
        trained = {f.subject_id for f in facts if f.split == "phase2"}
        assert not [f.id for f in facts if f.split == "heldout" and f.subject_id in trained], seed
        assert all(i["phase2"] >= 1 and i["heldout"] >= 1 for i in info.values()), (seed, info)
        assert {n: i["phase2"] for n, i in info.items()} == dict(Counter(f.relation for f in facts if f.split == "phase2"))
    # Ann has three relations, Bob two of them: Ann alone meets every count and leaves Bob held out,
    # whichever of them the seed draws first (a greedy split took Bob, then Ann for educated_at).
    rows = [{"subject": "Ann", "relation": "place_of_birth", "object": "Paris"},
            {"subject": "Ann", "relation": "place_of_residence", "object": "Rome"},
            {"subject": "Ann", "relation": "educated_at", "object": "Ghent University"},
            {"subject": "Bob", "relation": "place_of_birth", "object": "Lyon"},
            {"subject": "Bob", "relation": "place_of_residence", "object": "Oslo"}]
    inp = load_input(jsonl(tmp_path / "ann.jsonl", rows))
    for seed in range(10):
        facts, info = build_facts(inp, n_options=4, phase2_fraction=0.1, seed=seed)
        assert {f.subject for f in facts if f.split == "phase2"} == {"Ann"}, seed


def test_one_name_typed_two_ways_is_one_person(tmp_path):
    """"José Núñez" pasted from macOS (letters + combining marks) or with a zero-width space is the
    same person: two birthplaces for them is the conflict error, not two people."""
    nfc, nfd = "Jos\u00e9 N\u00fa\u00f1ez", unicodedata.normalize("NFD", "Jos\u00e9 N\u00fa\u00f1ez")
    assert nfc != nfd
    for other in (nfd, "Jos\u00e9\u200b N\u00fa\u00f1ez"):
        path = jsonl(tmp_path / "f.jsonl", [{**GOOD, "subject": nfc}, {**GOOD, "subject": other, "object": "Porto"}])
        with pytest.raises(DataError, match="given twice with different objects"):
            load_input(path)
    inp = load_input(jsonl(tmp_path / "g.jsonl", [{**GOOD, "subject": nfd}]))
    assert inp.rows[0].subject == nfc  # trained as typed on any machine
    # Accents make names: "Peña" and "Pena", Vietnamese "Hạ" and "Hà" are two people each.
    rows = [{**GOOD, "subject": "José Peña"}, {**GOOD, "subject": "José Pena", "object": "Porto"},
            {**GOOD, "subject": "Nguyễn Thị Hạ"}, {**GOOD, "subject": "Nguyễn Thị Hà", "object": "Hanoi"}]
    inp = load_input(jsonl(tmp_path / "h.jsonl", rows))
    assert len(inp.rows) == 4 and len({f.subject_id for f in build_facts(inp, 4, 0.5, 0)[0]}) == 4


def test_options_never_offer_the_answer_in_another_case(tmp_path):
    rows = [{"subject": f"Person {i}", "relation": "place_of_birth", "object": city}
            for i, city in enumerate(["paris", "ROME", "Lisbon"])]
    inp = load_input(jsonl(tmp_path / "f.jsonl", rows))
    assert len(option_pools(inp)["place_of_birth"]) == len(set(load_relation("place_of_birth").objects))
    for seed in range(30):
        facts, _ = build_facts(inp, n_options=60, phase2_fraction=0.5, seed=seed)
        for f in facts:
            assert [o for o in f.options if o.casefold() == f.object.casefold()] == [f.object], (seed, f.options)


def test_out_may_not_be_the_model_folder(tmp_path, tiny_model_dir):
    """Adding facts to an injected model must write a new folder: --overwrite into the model folder
    itself would delete the model before it is loaded."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    before = sorted(p.name for p in model.iterdir())
    path = jsonl(tmp_path / "f.jsonl", [GOOD])
    with pytest.raises(InjectError, match="is or holds the model folder"):
        inject(path, model=str(model), out=model, overwrite=True, quiet=True)
    assert sorted(p.name for p in model.iterdir()) == before
    inner = tmp_path / "out" / "run" / "phase2" / "checkpoint"  # a model inside --out's own record
    shutil.copytree(tiny_model_dir, inner)
    with pytest.raises(InjectError, match="is or holds the model folder"):
        inject(path, model=str(inner), out=tmp_path / "out", overwrite=True, quiet=True)
    assert (inner / "config.json").is_file()


def test_resuming_after_the_model_changed_in_place_is_refused_in_injects_terms(tmp_path, tiny_model_dir, monkeypatch):
    """An interrupted injection whose local model folder was edited since: refused (its finished
    stages read the old weights), with advice a `rote inject` user can follow, and nothing deleted."""
    import rote.runner
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "out"
    path = jsonl(tmp_path / "f.jsonl", [GOOD])

    class Interrupted(Exception):
        pass

    real_run = rote.runner.run

    def interrupted_after_data(cfg, quiet=False, **kw):
        real_run(cfg, quiet=quiet, stop_after="data")
        raise Interrupted

    monkeypatch.setattr(rote.runner, "run", interrupted_after_data)
    with pytest.raises(Interrupted):
        inject(path, model=str(model), out=out, overrides=SETTINGS, quiet=True)
    monkeypatch.setattr(rote.runner, "run", real_run)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    (model / "config.json").write_text((model / "config.json").read_text().replace("{", '{"note": 1, ', 1))
    with pytest.raises(RunError, match=r"model.name .* changed since the run started.*; pass --overwrite to inject afresh") as e:
        inject(path, model=str(model), out=out, overrides=SETTINGS, quiet=True)
    assert "--set name=" not in str(e.value)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == written
