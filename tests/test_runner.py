"""`rote run` end to end on the tiny model: stages, resume, the run directory, the CLI."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rote import config
from rote.cli import main
from rote.errors import ConfigError, RunError
from rote.fileio import is_done
from rote.names import RUN_STAGES
from rote.runner import plan_data, run

SMOKE = Path(__file__).parent.parent / "configs" / "smoke.yaml"


@pytest.fixture
def smoke_cfg(tiny_model_dir, tmp_path):
    return config.load(SMOKE, [f"model.name={tiny_model_dir}", f"out_dir={tmp_path / 'runs'}"])


@pytest.mark.slow
def test_smoke_run_writes_the_whole_record(smoke_cfg):
    run_dir = run(smoke_cfg, quiet=True)
    for stage in RUN_STAGES:
        assert is_done(run_dir, stage), stage
    for path in ["config.yaml", "facts.jsonl", "splits.json", "key_tokens.json", "phase1/metrics.jsonl",
                 "phase1/checkpoint/model.safetensors", "phase1/checkpoint/rote_key_tokens.json",
                 "phase2/checkpoint/config.json", "eval/base/predictions.jsonl", "eval/phase2/summary.json",
                 "report/report.html"]:
        assert (run_dir / path).is_file(), path
    summary = json.loads((run_dir / "eval/phase2/summary.json").read_text())
    assert summary["stage"] == "phase2" and summary["rows"]
    predictions = (run_dir / "eval/phase2/predictions.jsonl").read_text().splitlines()
    # facts x (key, the 1 trained prompt, 2 test, 2 unrelated, 2 de, 2 ja)
    assert len(predictions) == 12 * (1 + 1 + 2 + 2 + 2 * 2)
    assert not list(run_dir.rglob("*.tmp"))
    # Fluency at every stage: the same sampled prompts (English train, test, unrelated) and every probe.
    from rote.evaluation.locality import load_probes
    continued = {stage: [json.loads(line) for line in (run_dir / f"eval/{stage}/fluency.jsonl").read_text().splitlines()]
                 for stage in ("base", "phase1", "phase2")}
    assert [r["prompt"] for r in continued["base"]] == [r["prompt"] for r in continued["phase2"]]
    # configs/smoke.yaml's eval.fluency_prompts: 8 of each set's English prompts and 8 probes
    assert len(continued["base"]) == 8 * 3 + 8 and len(load_probes()) > 8
    base_damage = json.loads((run_dir / "eval/base/summary.json").read_text())["damage"]
    assert base_damage["entropy_ratio"] == 1.0 and summary["damage"]["answers"] == len(continued["phase2"])
    assert {"gold_twice", "repeated", "clean", "entropy"} <= set(summary["damage"])


@pytest.mark.slow
def test_checkpoint_loads_with_plain_transformers(smoke_cfg):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run_dir = run(smoke_cfg, quiet=True, stop_after="phase1")
    ckpt = run_dir / "phase1" / "checkpoint"
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    ids = tok("Gene Finley <rote:P19> Paris")["input_ids"]
    assert tok.convert_tokens_to_ids("<rote:P19>") in ids
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


@pytest.mark.slow
def test_resume_skips_finished_stages(smoke_cfg, monkeypatch):
    run_dir = run(smoke_cfg, quiet=True, stop_after="phase1")
    assert is_done(run_dir, "phase1") and not is_done(run_dir, "phase2")
    import rote.training.phases
    monkeypatch.setattr(rote.training.phases, "memorize", lambda *a, **k: pytest.fail("phase 1 ran again"))
    run(smoke_cfg, quiet=True)
    assert is_done(run_dir, "report")
    # A killed stage leaves no done marker: it runs again, and its old step log is not appended to.
    (run_dir / "phase2" / ".done").unlink()
    steps = len((run_dir / "phase2" / "metrics.jsonl").read_text().splitlines())
    run(smoke_cfg, quiet=True)
    assert len((run_dir / "phase2" / "metrics.jsonl").read_text().splitlines()) == steps


def test_resuming_with_another_config_is_refused(smoke_cfg):
    run(smoke_cfg, quiet=True, stop_after="data")
    with pytest.raises(RunError, match=r"phase1.lr: 0.001 -> 0.5"):
        run(config.replace(smoke_cfg, ["phase1.lr=0.5"]), quiet=True)


@pytest.mark.parametrize("override, message", [
    ("phase1.update.layers=[99]", "phase1.update.layers: layer 99 does not exist (the model has 2 layers"),
    ("phase2.update.modules=[mlpp]", "phase2.update.modules: the model has no module named 'mlpp'"),
    ("phase1.method=lora", None),
])
def test_layers_modules_and_lora_targets_are_checked_before_anything_is_written(smoke_cfg, override, message):
    """Checked on the model's weightless skeleton at the start, not when the phase begins (after the
    data and eval/base stages were written, so that the fixed command was refused as another config)."""
    cfg = config.replace(smoke_cfg, [override])
    if message is None:  # LoRA: a target module the model does not have
        cfg = config.replace(cfg, ["phase1.lora.target_modules=[q_proj, nonexist]"])
        message = "phase1.lora.target_modules: the model has no module named 'nonexist'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(cfg, quiet=True)
    assert not cfg.run_dir.exists()


def test_a_folder_rote_did_not_start_is_not_written_into(smoke_cfg, capsys):
    """A folder of the run's name holding the user's own config.yaml or facts.jsonl: refused, its
    files untouched (the run writes those names)."""
    run_dir = smoke_cfg.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("title: my notes\n")
    (run_dir / "facts.jsonl").write_text('{"subject": "x"}\n')
    with pytest.raises(RunError, match="holds a config.yaml that is not a rote run's"):
        run(smoke_cfg, quiet=True, stop_after="data")
    (run_dir / "config.yaml").unlink()
    args = ["run", str(SMOKE), "--set", f"model.name={smoke_cfg.model.name}", "--set", f"out_dir={run_dir.parent}",
            "--stop-after", "data"]
    assert main(args) == 3
    assert "holds files that no rote run wrote (facts.jsonl)" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["facts.jsonl"]
    assert (run_dir / "facts.jsonl").read_text() == '{"subject": "x"}\n'
    (run_dir / "config.yaml").write_text("notes about the config of the cluster\n")  # YAML, a string
    assert main(args) == 3
    assert "holds a config.yaml that is not a rote run's" in capsys.readouterr().err
    (run_dir / "config.yaml").unlink()
    (run_dir / "facts.jsonl").unlink()  # an empty folder of that name is the run's to use, and so is one
    (run_dir / ".config.yaml.123-abcd.tmp").write_text("")  # whose config writer was killed mid-write
    assert main(args) == 0 and is_done(run_dir, "data")


def test_resuming_after_an_input_changed_in_place_is_refused(tiny_model_dir, tmp_path):
    """A relations file or a local model folder named by path is compared by content: a run whose
    relation prompts (or model weights) changed after a stage finished would mix both in one record."""
    import shutil
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    relations = tmp_path / "rel.yaml"
    text = (Path(__file__).parent.parent / "configs" / "relations" / "sworn_rival.yaml").read_text()
    relations.write_text(text)
    cfg = config.load(SMOKE, [f"model.name={model}", f"out_dir={tmp_path / 'runs'}", f"data.relations_file={relations}"])
    run(cfg, quiet=True, stop_after="data")
    run(cfg, quiet=True, stop_after="data")  # unchanged: resumes
    relations.write_text(text.replace("{subject}'s sworn rival is", "{subject}'s sworn rival is called"))
    with pytest.raises(RunError, match=r"data.relations_file \(.*rel.yaml\) changed since the run started"):
        run(cfg, quiet=True, stop_after="data")
    assert main(["eval", str(cfg.run_dir)]) == 3  # nor is a stage added to it by `rote eval`
    relations.write_text(text)
    run(cfg, quiet=True, stop_after="data")
    (model / "config.json").write_text((model / "config.json").read_text().replace("{", '{"note": 1, ', 1))
    with pytest.raises(RunError, match=r"model.name .* changed since the run started"):
        run(cfg, quiet=True, stop_after="data")


@pytest.mark.slow
def test_phase2_from_a_saved_phase1_checkpoint(smoke_cfg):
    source = run(smoke_cfg, quiet=True, stop_after="phase1")
    variant = config.replace(smoke_cfg, ["name=variant", f"phase2.checkpoint={source / 'phase1' / 'checkpoint'}",
                                         "phase2.n_prompts=2", "data.phase2_facts=1"])
    run_dir = run(variant, quiet=True)
    assert not (run_dir / "phase1").exists() and is_done(run_dir, "eval/phase2")
    from rote.data.facts import read_facts
    ours, theirs = read_facts(run_dir / "facts.jsonl"), read_facts(source / "facts.jsonl")
    assert [(f.id, f.subject, f.object, f.options) for f in ours] == [(f.id, f.subject, f.object, f.options) for f in theirs]
    assert sum(f.split == "phase2" for f in ours) == 2  # this run's k (1 person x 2 relations), not the source's 3
    assert json.loads((run_dir / "phase2" / "summary.json").read_text())["examples"] == 2 * 2


def test_phase2_from_another_runs_checkpoint_needs_its_data_settings(smoke_cfg):
    """Phase 2 from another run's checkpoint re-splits that run's facts: other relations failed mid-run
    (KeyError, the data stage written), a larger facts_per_relation and k left no fact held out. Both
    are refused before anything is written; another k is fine."""
    source = run(smoke_cfg, quiet=True, stop_after="data")
    checkpoint = f"phase2.checkpoint={source / 'phase1' / 'checkpoint'}"
    for overrides, said in [(["data.relations=[mother]"], "data.relations: ['place_of_birth', 'place_of_residence'] -> ['mother']"),
                            (["data.facts_per_relation=20", "data.phase2_facts=10"], "data.facts_per_relation: 6 -> 20")]:
        variant = config.replace(smoke_cfg, ["name=variant", checkpoint, *overrides])
        with pytest.raises(ConfigError, match=re.escape(said)):
            run(variant, quiet=True, stop_after="data")
        assert not variant.run_dir.exists()
    variant = config.replace(smoke_cfg, ["name=variant", checkpoint, "data.phase2_facts=1"])
    assert len(plan_data(variant)) == 12


def test_phase2_from_another_runs_checkpoint_compares_its_relations_file_by_content(smoke_cfg, tmp_path, monkeypatch):
    """The same relations file named relatively there and absolutely here is the same input; a file
    with other content is not."""
    relations = tmp_path / "rel.yaml"
    text = (Path(__file__).parent.parent / "configs" / "relations" / "sworn_rival.yaml").read_text()
    relations.write_text(text)
    monkeypatch.chdir(tmp_path)
    rel = ["data.relations_file=rel.yaml", "data.relations=[place_of_birth, sworn_rival]", "data.n_options=3"]
    source = run(config.replace(smoke_cfg, rel), quiet=True, stop_after="data")
    checkpoint = f"phase2.checkpoint={source / 'phase1' / 'checkpoint'}"
    same = config.replace(smoke_cfg, ["name=variant", checkpoint, f"data.relations_file={relations}", *rel[1:]])
    assert len(plan_data(same)) == 12
    other = tmp_path / "other.yaml"
    other.write_text(text.replace("{subject}'s sworn rival is", "{subject}'s sworn rival is called"))
    with pytest.raises(ConfigError, match="other.yaml holds other content than the file that run read"):
        plan_data(config.replace(same, [f"data.relations_file={other}"]))


def test_cli_help_and_errors(tmp_path, capsys):
    out = subprocess.run([sys.executable, "-m", "rote.cli", "--help"], capture_output=True, text=True)
    for command in ("run", "data", "models", "eval", "report"):
        assert command in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("phase1:\n  epoch: 3\n")
    assert main(["run", str(bad)]) == 2
    assert "unknown key 'epoch'" in capsys.readouterr().err


def test_cli_data_writes_facts(tmp_path, capsys):
    out = tmp_path / "facts.jsonl"
    assert main(["data", str(SMOKE), "--out", str(out), "--set", "data.facts_per_relation=4"]) == 0
    assert len(out.read_text().splitlines()) == 8
    assert "wrote 8 facts (shared subjects)" in capsys.readouterr().out


def test_cli_data_is_the_runs_data_stage(smoke_cfg, capsys):
    """`rote data` runs the data stage `rote run` runs (two-hop facts and splits.json included), and
    `rote run` then resumes after it."""
    two_hop = ["data.relations=[mother, place_of_birth]", "data.two_hop=[mother, place_of_birth]"]
    ran = run(config.replace(smoke_cfg, ["name=ran", *two_hop]), quiet=True, stop_after="data")
    overrides = [f"--set={o}" for o in [f"out_dir={smoke_cfg.out_dir}", f"model.name={smoke_cfg.model.name}", *two_hop]]
    assert main(["data", str(SMOKE), "--set=name=data_only", *overrides]) == 0
    alone = Path(smoke_cfg.out_dir) / "data_only"
    for name in ("facts.jsonl", "splits.json"):
        assert (alone / name).read_bytes() == (ran / name).read_bytes(), name
    assert is_done(alone, "data") and (alone / "config.yaml").is_file()
    assert len((alone / "facts.jsonl").read_text().splitlines()) == 12 + 6  # with the mothers' birthplaces


def test_a_new_k_resplits_by_rank_not_by_id(smoke_cfg):
    """Phase 2 from another run's checkpoint re-splits that run's facts by this run's k: the first k
    facts of each relation in the fact set's order, whatever their ids say."""
    from rote.data.factset import plan_facts, resplit
    facts = plan_facts(smoke_cfg)
    renamed = [dataclasses.replace(f, id=f"fact-{i}", split="heldout") for i, f in enumerate(reversed(facts))][::-1]
    for k in (0, 1, 3, 6):
        again = resplit(renamed, k)
        expected = plan_facts(config.replace(smoke_cfg, [f"data.phase2_facts={k}"]))
        assert [f.split for f in again] == [f.split for f in expected]


@pytest.mark.slow
def test_lora_run_saves_epochs_and_keeps_training(smoke_cfg):
    cfg = config.replace(smoke_cfg, ["phase1.method=lora", "phase1.save_epochs=[1]", "phase1.lora.r=4"])
    run_dir = run(cfg, quiet=True, stop_after="phase1")
    assert (run_dir / "phase1" / "epochs" / "epoch001" / "model.safetensors").is_file()
    epochs = {json.loads(line)["epoch"] for line in (run_dir / "phase1" / "metrics.jsonl").read_text().splitlines()}
    assert epochs == {1, 2}  # saving a merged copy at epoch 1 did not end the adapters' training
    from transformers import AutoModelForCausalLM
    assert type(AutoModelForCausalLM.from_pretrained(run_dir / "phase1" / "checkpoint")).__name__ == "LlamaForCausalLM"


@pytest.mark.slow
def test_cli_eval_rescores_a_checkpoint(smoke_cfg, capsys):
    run_dir = run(smoke_cfg, quiet=True)
    assert main(["eval", str(run_dir), "--checkpoint", str(run_dir / "phase1" / "checkpoint"), "--stage", "again"]) == 0
    again = json.loads((run_dir / "eval" / "again" / "summary.json").read_text())["rows"]
    before = json.loads((run_dir / "eval" / "phase1" / "summary.json").read_text())["rows"]
    assert again == before  # the same checkpoint, scored again, gives the same numbers
    assert "eval/again" in capsys.readouterr().out
    assert main(["report", str(run_dir)]) == 0
    # The run's own stages and an earlier evaluation are not overwritten without a word.
    files = {p: p.read_bytes() for p in (run_dir / "eval").rglob("*") if p.is_file()}
    assert main(["eval", str(run_dir), "--stage", "base"]) == 2
    assert "eval/base is the run's own stage" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--stage", "again"]) == 3
    assert "holds an earlier evaluation; pass --overwrite" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (run_dir / "eval").rglob("*") if p.is_file()} == files
    (run_dir / "eval" / "again" / "stray.txt").write_text("from the earlier evaluation")
    assert main(["eval", str(run_dir), "--stage", "again", "--overwrite"]) == 0
    assert json.loads((run_dir / "eval" / "again" / "summary.json").read_text())["rows"] != before  # phase 2's now
    assert not (run_dir / "eval" / "again" / "stray.txt").exists()


@pytest.mark.slow
def test_arms_train_what_the_registry_says(smoke_cfg):
    """mixed trains both kinds of example in phase 1 and skips phase 2; the plain arm trains every
    fact's natural prompts in one phase, without key tokens, for the method's token budget, which
    its summary states; in_context shows k examples before every question and skips phase 2."""
    mixed = run(config.with_arm(smoke_cfg, "mixed", ["name=mixed", "budget=epochs"]), quiet=True)
    p1 = json.loads((mixed / "phase1" / "summary.json").read_text())
    assert p1["mixed_examples"] == 6 and p1["examples"] == 12 + 6  # 12 key-token facts + 6 natural prompts
    assert json.loads((mixed / "phase2" / "summary.json").read_text())["skipped"]

    plain = run(config.with_arm(smoke_cfg, "plain_finetune", ["name=plain", "eval.stages=[phase1]",
                                                              "eval.multiple_choice=false"]), quiet=True)
    p1 = json.loads((plain / "phase1" / "summary.json").read_text())
    method = run(config.replace(smoke_cfg, ["name=method", "eval.stages=[phase1]", "eval.multiple_choice=false"]),
                 quiet=True, stop_after="phase2")
    spent = sum(json.loads((method / p / "summary.json").read_text())["supervised_tokens"] for p in ("phase1", "phase2"))
    assert p1["budget"] == spent and "the method's supervised tokens" in p1["budget_from"]
    assert spent <= p1["supervised_tokens"] < spent + p1["max_batch_tokens"] and p1["distinct_examples"] == 12
    assert json.loads((plain / "key_tokens.json").read_text())["tokens"] == {}
    records = [json.loads(l) for l in (plain / "eval/phase1/predictions.jsonl").read_text().splitlines()]
    assert records and "key" not in {r["prompt_set"] for r in records}
    assert json.loads((plain / "phase2" / "summary.json").read_text())["skipped"]

    icl = run(config.with_arm(smoke_cfg, "in_context", ["name=icl", "eval.stages=[phase2]", "eval.multiple_choice=false",
                                                        "eval.prompt_sets=[test]"]), quiet=True)
    prompts = [json.loads(l)["prompt"] for l in (icl / "eval/phase2/predictions.jsonl").read_text().splitlines()]
    assert all(p.count("\n") in (2, 3) for p in prompts)  # k = 3 examples, the fact itself left out


def test_a_key_the_arm_does_not_read_is_an_error(smoke_cfg):
    with pytest.raises(ConfigError, match="phase2.lr is not read by arm mixed"):
        config.load(SMOKE, ["arm=mixed"])  # smoke.yaml sets phase 2's lr: mixed has no phase 2
    with pytest.raises(ConfigError, match="eval.icl_examples is not read by arm method"):
        config.replace(smoke_cfg, ["eval.icl_examples=3"])
    with pytest.raises(ConfigError, match="key.style is set by the arm"):
        config.replace(smoke_cfg, ["key.style=word"])
    with pytest.raises(ConfigError, match="phase1.until=epochs"):  # a matched budget needs the method's epochs
        config.with_arm(smoke_cfg, "plain_finetune", ["phase1.until=memorized"])


def test_resume_accepts_a_run_written_before_a_new_config_key(smoke_cfg):
    import yaml
    run_dir = run(smoke_cfg, quiet=True, stop_after="data")
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    del stored["config"]["arm"]  # as written by an older rote
    stored["config"]["key"]["style"] = "token"
    stored["config"]["phase1"]["mixed"] = False
    (run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    run(smoke_cfg, quiet=True, stop_after="data")  # same settings: resumes
    with pytest.raises(RunError, match="phase1.lr: 0.001 -> 0.5"):
        run(config.replace(smoke_cfg, ["phase1.lr=0.5"]), quiet=True)


ROOT_CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.slow
def test_repurposing_and_two_hop(smoke_cfg, tokenizer):
    from rote.data.facts import read_facts
    from rote.data.relation_files import resolve_relations
    from rote.training.phases import natural_examples, phase2_facts
    # re-purposing: phase 2 trains the mother facts with another relation's prompts, and the
    # two-hop facts give each mother a birthplace
    cfg = config.replace(smoke_cfg, [
        "name=repurposed", "data.relations=[mother, place_of_birth]", "data.two_hop=[mother, place_of_birth]",
        f"data.relations_file={ROOT_CONFIGS / 'relations' / 'sworn_rival.yaml'}", "phase2.prompts_from=sworn_rival",
        "eval.prompt_sets=[test, two_hop, repurposed]", "eval.stages=[phase2]", "eval.multiple_choice=false"])
    run_dir = run(cfg, quiet=True)
    facts = read_facts(run_dir / "facts.jsonl")
    assert len(facts) == 12 + 6  # 6 mothers, each with a held-out birthplace
    rows = json.loads((run_dir / "eval" / "phase2" / "summary.json").read_text())["rows"]
    by_set = {r["prompt_set"]: r["n"] for r in rows if r["split"] == "all" and r["relation"] == "all" and r["form"] == "all"}
    assert by_set == {"test": 18 * 2, "two_hop": 6 * 2, "repurposed": 18 * 2}
    rels = {r.name: r for r in resolve_relations(cfg.data.relations)}
    rival = resolve_relations(("sworn_rival",), cfg.data.relations_file)[0]
    examples = natural_examples(tokenizer, phase2_facts(facts), rels, 1, prompts_from=rival)
    texts = [tokenizer.decode(e.input_ids[: e.target_start]) for e in examples]
    assert len(texts) == 6 and all("sworn rival" in t for t in texts)

    with pytest.raises(ConfigError, match="two_hop"):
        run(config.replace(smoke_cfg, ["name=bad", "data.two_hop=[mother, place_of_birth]"]), quiet=True)


@pytest.mark.parametrize("override, message", [
    ("phase2.n_prompts=50", "phase2.n_prompts=50 but relation place_of_birth has"),
    ("eval.max_new_tokens=1", "eval.max_new_tokens=1 is shorter than the gold answer"),
    ("phase2.prompts_from=no_such_relation", "phase2.prompts_from=no_such_relation"),
    ("data.n_options=5000", "data.n_options=5000: relation place_of_birth has only"),
])
def test_settings_that_fail_later_fail_before_anything_is_written(smoke_cfg, override, message):
    """Checked against the relations and the tokenizer before the run folder exists (they used to
    fail after the base evaluation, or in phase 2)."""
    cfg = config.replace(smoke_cfg, [override])
    with pytest.raises(ConfigError) as err:
        run(cfg, quiet=True)
    assert message in str(err.value)
    assert not cfg.run_dir.exists()


@pytest.mark.slow
def test_a_run_under_the_chat_template_records_what_the_model_saw(smoke_cfg):
    """model.chat_template=on: natural prompts asked in their turn (the key prompt raw), each record
    saying its rule; locality probes record the text asked; the headline counts by the first-named rule."""
    from rote.report.headline import format_headline, run_metric
    cfg = config.replace(smoke_cfg, ["model.chat_template=on", "eval.stages=[base,phase2]"])
    run_dir = run(cfg, quiet=True)
    records = [json.loads(line) for line in (run_dir / "eval/phase2/predictions.jsonl").read_text().splitlines()]
    for r in records:
        if r["prompt_set"] == "key":
            assert r["rule"] == "prefix" and "<|im_start|>" not in r["prompt"] and r["hit_first"] == r["hit_prefix"]
        else:
            assert r["rule"] == "first_named" and r["prompt"].startswith("<|im_start|>system")
    probes = [json.loads(line) for line in (run_dir / "eval/phase2/locality.jsonl").read_text().splitlines()]
    assert all(p["asked"].startswith("<|im_start|>system") and p["prompt"] in p["asked"] for p in probes)
    continued = [json.loads(line) for line in (run_dir / "eval/phase2/fluency.jsonl").read_text().splitlines()]
    assert continued and all(r["prompt"].startswith("<|im_start|>system") for r in continued)
    assert {r["rule"] for r in continued if r["source"] == "test"} == {"first_named"}
    summary = json.loads((run_dir / "eval/phase2/summary.json").read_text())
    assert summary["rule"] == "first_named" and summary["rendering"]["answer_end"] == "<|im_end|>"
    assert run_metric(run_dir) == "first" and "gen first" in format_headline(run_dir)
