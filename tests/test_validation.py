"""Stopping phase 2 on a validation signal (phase2.until: validation): it stops where the signal
stops improving and keeps the best epoch's weights, its settings are checked before anything is
written, and its prompts are never a prompt evaluation asks."""
import warnings

import pytest
import torch
import yaml

from rote import config
from rote.config import EvalConfig, KeyConfig, Phase2Config
from rote.data.facts import PromptOverlapWarning, load_relation, relation_from_dict
from rote.data.factset import check_relations, plan_facts, relations_of
from rote.data.prompt_hygiene import validation_prompts
from rote.data.synth import make_facts
from rote.errors import ConfigError
from rote.evaluation.queries import build_queries, validation_queries
from rote.names import OTHER_LANGUAGES, PROMPT_SETS
from rote.training.models import load_model
from rote.training.phases import generalize

# ---------------------------------------------------------------- the stop rule and the kept weights


def test_a_signal_that_peaks_and_falls_stops_at_the_right_epoch_and_keeps_the_peak(tokenizer, tiny_model_dir, tmp_path):
    """Accuracy 0.2, 0.5, 0.5 (a tie: the earlier epoch stays best), 0.3: with patience 2, training
    stops after epoch 4 of at most 10, and the model is left with epoch 2's weights."""
    model = load_model(str(tiny_model_dir))
    rel = load_relation("capital")
    facts = make_facts([rel], 4, 4, n_options=4, seed=0)
    signal, weights = iter([0.2, 0.5, 0.5, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]), []

    def measure():
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return next(signal)

    cfg = Phase2Config(epochs=10, until="validation", patience=2, lr=1e-2, batch_size=2, precision="fp32")
    summary = generalize(model, tokenizer, facts, {"capital": rel}, cfg, tmp_path, seed=0, measure=measure)
    assert summary["epochs"] == len(weights) == 4 and summary["stopped_early"]
    assert summary["best_epoch"] == 2
    assert summary["validation_by_epoch"] == [{"epoch": e, "accuracy": a} for e, a in
                                              ((1, 0.2), (2, 0.5), (3, 0.5), (4, 0.3))]
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], w) for n, w in weights[1].items())  # epoch 2's weights
    assert not all(torch.equal(now[n], w) for n, w in weights[3].items())  # not the last epoch's


def test_without_the_setting_phase2_trains_every_epoch(tokenizer, tiny_model_dir, tmp_path):
    model = load_model(str(tiny_model_dir))
    rel = load_relation("capital")
    facts = make_facts([rel], 2, 2, n_options=4, seed=0)
    summary = generalize(model, tokenizer, facts, {"capital": rel}, Phase2Config(epochs=3, batch_size=2), tmp_path,
                         seed=0, measure=lambda: pytest.fail("measured without until: validation"))
    assert summary["epochs"] == 3 and "best_epoch" not in summary and "validation_by_epoch" not in summary


# ---------------------------------------------------------------- the settings


def test_the_keys_round_trip_and_the_defaults_change_nothing():
    cfg = config.from_dict({"phase2": {"until": "validation", "patience": 3, "validation_prompts": 4, "epochs": 20}})
    assert (cfg.phase2.until, cfg.phase2.patience, cfg.phase2.validation_prompts) == ("validation", 3, 4)
    assert config.from_dict(config.to_dict(cfg)) == cfg
    assert config.RunConfig().phase2.until == "epochs"


@pytest.mark.parametrize("arm", ["plain_finetune", "plain_finetune_k", "mixed", "in_context"])
def test_an_arm_without_phase_2_refuses_the_setting(arm):
    """The one-phase arms compare at a token budget, in_context trains no phase 2: setting the stop
    rule on them is an error, never a silent no-op."""
    for extra in ({}, {"budget": "epochs"}):
        if arm == "in_context" and extra:
            continue  # in_context has no budget
        tree = {"arm": arm, **extra}
        for key, value in (("until", "validation"), ("patience", 2), ("validation_prompts", 1)):
            with pytest.raises(ConfigError, match=f"phase2.{key}"):
                config.from_dict(tree | {"phase2": {key: value}})
    # a method config switched to such an arm: its matched budget cannot be counted before the method runs
    method = config.from_dict({"phase2": {"until": "validation"}})
    if arm != "in_context":
        with pytest.raises(ConfigError, match="needs the method's phase-2 epochs: set phase2.until=epochs"):
            config.with_arm(method, arm)
        assert config.with_arm(method, arm, ["budget_tokens=100"]).phase2.until == "epochs"  # nothing to count


def _cfg(tmp_path, **phase2):
    return config.from_dict({"name": "v", "out_dir": str(tmp_path),
                             "data": {"facts_per_relation": 4, "phase2_facts": 2},
                             "phase2": {"until": "validation", **phase2}})


def test_too_few_validation_prompts_is_an_error_naming_relation_count_and_key(tmp_path):
    check_relations(_cfg(tmp_path, n_prompts=8, validation_prompts=2))  # 10 training prompts: 8 + 2 fit
    with pytest.raises(ConfigError, match=r"phase2.validation_prompts=2 but relation place_of_birth has 1 training "
                                          r"prompts that phase 2 does not train .* phase2.n_prompts=9"):
        check_relations(_cfg(tmp_path, n_prompts=9, validation_prompts=2))
    with pytest.raises(ConfigError, match="phase2.validation_prompts=5 but relation mother has 3"):
        check_relations(_cfg(tmp_path, n_prompts=7, validation_prompts=5, prompts_from="mother"))


def test_the_run_refuses_before_writing_anything(tmp_path):
    from rote.runner import run
    cfg = _cfg(tmp_path, n_prompts=10)
    with pytest.raises(ConfigError, match="phase2.validation_prompts=2 but relation place_of_birth has 0"):
        run(cfg, quiet=True)
    assert not cfg.run_dir.exists()


# ---------------------------------------------------------------- never a prompt evaluation asks


@pytest.mark.parametrize("n_prompts, prompts_from, repurposed", [(1, None, None), (3, None, "capital"),
                                                                  (2, "place_of_residence", None)])
def test_no_validation_prompt_is_an_evaluated_prompt(n_prompts, prompts_from, repurposed):
    """Every prompt set (the `train` set asks the trained prompts), every language, every prompt."""
    cfg = config.from_dict({"data": {"relations": ["mother", "place_of_birth", "place_of_residence", "capital"],
                                     "facts_per_relation": 4, "phase2_facts": 2, "n_options": 4,
                                     "two_hop": ["mother", "place_of_birth"]},
                            "phase2": {"until": "validation", "n_prompts": n_prompts, "prompts_from": prompts_from},
                            "eval": {"repurposed_prompts": repurposed}})
    relations = relations_of(cfg)
    also = {n: load_relation(n) if n else None for n in (prompts_from, repurposed or prompts_from)}
    facts = plan_facts(cfg)
    asks = also[repurposed or prompts_from]
    sets = tuple(s for s in PROMPT_SETS if s != "repurposed" or asks)
    ecfg = EvalConfig(prompt_sets=sets, languages=OTHER_LANGUAGES, prompts_per_set=100)
    queries = build_queries(facts, relations, KeyConfig(), ecfg, n_prompts, asks)
    assert {q.prompt_set for q in queries} == set(sets)  # every prompt set asked something
    asked = {q.rendered.prompt for q in queries}
    phase2 = [f for f in facts if f.split == "phase2"]
    checks = validation_queries(phase2, relations, n_prompts, 2, also[prompts_from], asks)
    assert len(checks) == 2 * len(phase2)
    assert not {q.rendered.prompt for q in checks} & asked
    # the shipped relations need none left out: the next training prompts after the trained ones
    fact = phase2[0]
    rel = also[prompts_from] or relations[fact.relation]
    assert [q.rendered.prompt for q in checks if q.fact == fact] == \
        [t.replace("{subject}", fact.subject) for t in rel.train_prompts[n_prompts:n_prompts + 2]]


def _home(test_prompts):
    raw = {"id": "U1", "name": "home", "subject_kind": "person", "object_kind": "city", "objects": ["Paris", "Rome"],
           "prompts": {"train": ["{subject} lives in", "Where is {subject} living now?", "{subject} has a home in",
                                 "{subject} resides in"], "test": test_prompts}}
    return raw


def test_a_training_prompt_that_evaluation_asks_is_never_a_validation_prompt(tmp_path):
    """A user relation may repeat a training prompt as a test prompt (a warning, not an error): that
    prompt is skipped, and the count check counts what is left."""
    rel = relation_from_dict(_home(["Where is {subject} living now?"]), "test")
    assert validation_prompts(rel, 1, 2) == ("{subject} has a home in", "{subject} resides in")
    with warnings.catch_warnings():  # the same question in other case and punctuation is skipped too
        warnings.simplefilter("ignore", PromptOverlapWarning)
        near = relation_from_dict(_home(["where is {subject} living now"]), "test")
    assert validation_prompts(near, 1, 2) == ("{subject} has a home in", "{subject} resides in")
    facts = make_facts([rel], 2, 2, n_options=2, seed=0)
    asked = {q.rendered.prompt for q in build_queries(facts, {"home": rel}, KeyConfig(), EvalConfig(), 1)}
    checks = validation_queries(facts, {"home": rel}, 1, 2)
    assert len(checks) == 4 and not {q.rendered.prompt for q in checks} & asked
    path = tmp_path / "home.yaml"
    path.write_text(yaml.safe_dump({"relations": [_home(["Where is {subject} living now?"])]}))
    cfg = config.from_dict({"data": {"relations": ["home"], "relations_file": str(path), "facts_per_relation": 2,
                                     "phase2_facts": 1, "n_options": 2},
                            "phase2": {"until": "validation", "validation_prompts": 3}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptOverlapWarning)
        with pytest.raises(ConfigError, match="phase2.validation_prompts=3 but relation home has 2"):
            check_relations(cfg)


# ---------------------------------------------------------------- a run


@pytest.mark.slow
def test_a_run_saves_the_best_epochs_weights(tiny_model_dir, tmp_path):
    """End to end on the tiny model: the phase-2 checkpoint of a run that stopped on validation is
    the one a run of exactly its best epochs saves (same seed, constant learning rate)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from rote.fileio import read_json
    from rote.runner import run
    smoke = Path(__file__).parent.parent / "configs" / "smoke.yaml"
    base = config.load(smoke, [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}", "eval.stages=[phase2]",
                               "eval.multiple_choice=false", "eval.prompt_sets=[test]"])
    stopped = run(config.replace(base, ["name=stopped", "phase2.epochs=4", "phase2.until=validation"]), quiet=True)
    summary = read_json(stopped / "phase2" / "summary.json")
    best = summary["best_epoch"]
    assert [r["epoch"] for r in summary["validation_by_epoch"]] == list(range(1, summary["epochs"] + 1))
    # it trained past its best epoch (on this seed: best 1, stopped after 2), so the weights were put back
    assert summary["stopped_early"] and best < summary["epochs"] < 4
    checkpoint = str(stopped / "phase1" / "checkpoint")
    plain = run(config.replace(base, ["name=plain", f"phase2.epochs={best}", f"phase2.checkpoint={checkpoint}"]),
                quiet=True)
    a = load_file(stopped / "phase2" / "checkpoint" / "model.safetensors")
    b = load_file(plain / "phase2" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("gradient", ["masked", "rows"])
def test_the_best_epochs_key_rows_come_back_too(tokenizer, tiny_model_dir, tmp_path, gradient):
    """With update.embeddings: key_rows, the key tokens' rows are phase 2's own weights; under
    `key_rows_gradient: rows` they train as a block apart from the (frozen) matrix, which the
    snapshot of the model's trainable parameters missed: the restore left the last epoch's rows."""
    from rote.config import UpdateConfig
    from rote.data.templates import key_tokens
    from rote.training import trainable
    from rote.training.models import load_stage

    rel = load_relation("capital")
    keys = key_tokens([rel], KeyConfig())
    model, tok, record = load_stage(str(tiny_model_dir), key_tokens=keys)
    key_ids = sorted(record["tokens"].values())
    facts = make_facts([rel], 4, 4, n_options=4, seed=0)
    cfg = Phase2Config(epochs=3, until="validation", patience=5, lr=1e-2, batch_size=2, precision="fp32",
                       n_prompts=2, update=UpdateConfig(embeddings="key_rows", key_rows_gradient=gradient))
    restricted = trainable.restrict(model, cfg.update, key_ids)
    rows, signal = [], iter([0.9, 0.5, 0.5])  # epoch 1 is the best
    matrix = model.get_input_embeddings().weight

    def measure():
        rows.append(matrix[key_ids].detach().clone())
        return next(signal)

    # the key rows train through the tied output head (every position's softmax reaches them)
    summary = generalize(model, tok, facts, {"capital": rel}, cfg, tmp_path, seed=0, measure=measure,
                         frozen_decay=restricted["frozen_decay"])
    trainable.release(model, restricted)
    assert summary["best_epoch"] == 1 and len(rows) == 3
    assert not torch.equal(rows[0], rows[2])  # the key rows did train after epoch 1
    assert torch.equal(matrix[key_ids], rows[0])
