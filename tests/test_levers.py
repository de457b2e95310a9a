"""The levers against damage act: the anchor loss pulls toward the base model, the update goes only
where `update` says, and the settings are checked (rote.levers, rote.training.preserve, .trainable)."""
import json
from pathlib import Path

import pytest
import torch

from rote import config as config_mod
from rote import levers
from rote.config import PreserveConfig, TrainConfig, UpdateConfig
from rote.errors import ConfigError
from rote.training.encode import encode
from rote.training.loop import anchor_batches, train
from rote.training.models import add_key_tokens, load_model
from rote.training.preserve import TOP_K, anchor_loss_sum, attach_targets, continuation_anchor, text_anchor
from rote.training.trainable import release, restrict


def _examples(tok):
    return [encode(tok, f"Gene Finley{i} was born in", " Paris") for i in range(6)]


def _anchors(tok, model, hard=False):
    texts = ["Gene Finley0's favourite colour is", "Gene Finley1 likes to", "The weather today is"]
    out = []
    for text in texts:
        ids = tok(text + " nice and warm")["input_ids"]
        out.append(continuation_anchor(tok(text)["input_ids"], ids, "contrast", hard))
    out.append(text_anchor(tok("Rivers carry water from the hills down to the sea.")["input_ids"], "replay"))
    return attach_targets(model, out, tok.pad_token_id)


def test_kl_is_zero_at_the_base_and_grows_away_from_it(tokenizer, tiny_model):
    anchors = _anchors(tokenizer, tiny_model)
    assert anchors[0].top_ids.shape == (len(anchors[0].positions), TOP_K)
    with torch.no_grad():
        assert anchor_loss_sum(tiny_model, anchors, tokenizer.pad_token_id).item() == pytest.approx(0, abs=1e-4)
        tiny_model.model.norm.weight.mul_(20.0)  # sharper distributions: the random model is near uniform
        assert anchor_loss_sum(tiny_model, anchors, tokenizer.pad_token_id).item() > 1e-3


def test_coarsened_kl_matches_a_hand_computation(tokenizer, tiny_model_dir):
    base, moved = load_model(str(tiny_model_dir)), load_model(str(tiny_model_dir))
    with torch.no_grad():
        moved.model.norm.weight.mul_(-20.0)
    anchors = _anchors(tokenizer, base)[:1]
    a = anchors[0]
    ids = torch.tensor([a.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(base(input_ids=ids).logits[0, list(a.positions)].float(), -1)
        logq = torch.log_softmax(moved(input_ids=ids).logits[0, list(a.positions)].float(), -1)
        got = anchor_loss_sum(moved, anchors, tokenizer.pad_token_id).item()
    expected, full = 0.0, 0.0
    for t in range(len(a.positions)):
        top = logp[t].topk(TOP_K).indices
        rest = torch.ones(logp.shape[1], dtype=torch.bool)
        rest[top] = False
        p = torch.cat([logp[t, top].exp(), logp[t, rest].exp().sum()[None]])
        q = torch.cat([logq[t, top].exp(), logq[t, rest].exp().sum()[None]])
        expected += (p * (p.log() - q.log())).sum().item()
        full += (logp[t].exp() * (logp[t] - logq[t])).sum().item()
    assert got == pytest.approx(expected, rel=1e-3)
    assert got <= full + 1e-4  # a lower bound on the full KL


def test_hard_anchors_train_the_base_models_top_token(tokenizer, tiny_model):
    (a,) = _anchors(tokenizer, tiny_model, hard=True)[:1]
    with torch.no_grad():
        logits = tiny_model(input_ids=torch.tensor([a.input_ids])).logits[0, list(a.positions)].float()
        expected = torch.nn.functional.cross_entropy(logits, logits.argmax(-1), reduction="sum").item()
        assert anchor_loss_sum(tiny_model, [a], tokenizer.pad_token_id).item() == pytest.approx(expected, rel=1e-4)


def _train(model, tok, path, anchors=(), weight=1.0, **kw):
    cfg = TrainConfig(epochs=6, lr=3e-3, batch_size=3, warmup_steps=0, schedule="constant", precision="fp32",
                      preserve=PreserveConfig(weight=weight), **kw)
    return train(model, _examples(tok), cfg, tok.pad_token_id, path, anchors=anchors)


def test_the_anchor_term_keeps_the_model_near_its_base(tokenizer, tiny_model_dir, tmp_path):
    """Dropping the anchor term from the loss (or giving it no weight) loses this: the anchored KL
    after training is several times smaller with the lever than without."""
    base = load_model(str(tiny_model_dir))
    anchors = _anchors(tokenizer, base)
    kls = {}
    for name, use in (("off", ()), ("on", anchors)):
        model = load_model(str(tiny_model_dir))
        _train(model, tokenizer, tmp_path / name, use, weight=10.0)
        with torch.no_grad():
            kls[name] = anchor_loss_sum(model, anchors, tokenizer.pad_token_id).item()
    assert kls["on"] < 0.5 * kls["off"], kls
    rows = [json.loads(x) for x in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert all("preserve_loss" in r for r in rows)
    assert "preserve_loss" not in json.loads((tmp_path / "off" / "metrics.jsonl").read_text().splitlines()[0])


def test_anchor_batches_cycle_through_every_anchor():
    batches = anchor_batches(5, 2, seed=0)
    first = [next(batches) for _ in range(5)]  # 10 draws: every anchor exactly twice
    flat = [i for b in first for i in b]
    assert sorted(flat) == sorted(list(range(5)) * 2) and all(len(b) == 2 for b in first)


# ---------------------------------------------------------------- where the update goes


def test_key_rows_only_train_the_key_rows_and_do_not_decay_the_rest(tokenizer, tiny_model_dir, tmp_path):
    import copy
    tok = copy.deepcopy(tokenizer)
    model = load_model(str(tiny_model_dir))
    record = add_key_tokens(model, tok, ["<rote:P19>"])
    key_id = record["tokens"]["<rote:P19>"]
    examples = [encode(tok, f"Gene Finley{i} <rote:P19>", " Paris") for i in range(4)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    restricted = restrict(model, UpdateConfig(layers=(-1,), modules=("mlp",), embeddings="key_rows"), [key_id])
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=2, warmup_steps=0, precision="fp32", weight_decay=0.1)
    train(model, examples, cfg, tok.pad_token_id, tmp_path, frozen_decay=restricted["frozen_decay"])
    release(model, restricted)
    emb = model.model.embed_tokens.weight.detach()
    changed_rows = (emb != before["model.embed_tokens.weight"]).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [key_id]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"model.embed_tokens.weight"} | {n for n in before if n.startswith("model.layers.1.mlp.")}
    assert all(p.requires_grad for p in model.parameters())  # released for the next phase


@pytest.mark.parametrize("arch", ["gpt2", "mpt"])
def test_layers_and_modules_find_the_decoder_layers_whatever_their_name(arch):
    """GPT-2 and Falcon keep their layers in `transformer.h`, MPT in `transformer.blocks`: a rule that
    looked for `layers.N.` froze every decoder weight of such models and trained nothing it was asked to."""
    from transformers import AutoModelForCausalLM, GPT2Config, MptConfig
    config = (GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=64, n_positions=32) if arch == "gpt2" else
              MptConfig(n_layers=3, d_model=16, n_heads=2, vocab_size=64, max_seq_len=32))
    model = AutoModelForCausalLM.from_config(config)
    stack = "transformer.h" if arch == "gpt2" else "transformer.blocks"
    restricted = restrict(model, UpdateConfig(layers=(-1,), modules=("ffn" if arch == "mpt" else "mlp",),
                                              embeddings="frozen"), [])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(f"{stack}.2.") and (".mlp." in n or ".ffn." in n) for n in trained)
    release(model, restricted)
    restrict(model, UpdateConfig(layers=(0,), embeddings="frozen"), [])
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {n for n, _ in model.named_parameters() if n.startswith(f"{stack}.0.")}


def test_update_settings_are_checked(tiny_model):
    with pytest.raises(ConfigError, match="layer 5 does not exist"):
        restrict(tiny_model, UpdateConfig(layers=(5,)), [])
    with pytest.raises(ConfigError, match="no module named 'ffn'"):
        restrict(tiny_model, UpdateConfig(modules=("ffn",)), [])
    with pytest.raises(ConfigError, match="adds no key tokens"):
        restrict(tiny_model, UpdateConfig(embeddings="key_rows"), [])


def test_preserve_and_update_config_keys():
    cfg = config_mod.from_dict({"phase2": {"preserve": {"contrast": 4, "target": "greedy"},
                                           "update": {"layers": [-1], "embeddings": "key_rows"}}})
    assert cfg.phase2.preserve.contrast == 4 and cfg.phase2.update.layers == (-1,)
    base = config_mod.from_dict({"arm": "plain_finetune", "phase1": {"preserve": {"replay": 8}}})
    assert base.phase1.preserve.replay == 8  # the baselines read the same levers
    for bad, match in ((["phase1.preserve.weight=0"], "weight=0.0 must be > 0"),
                       (["phase2.preserve.contrast=-1"], "contrast=-1 must be >= 0"),
                       (["phase2.preserve.kl=1"], "unknown key 'kl'"),
                       (["phase2.update.layers=[1, 1]"], "names 1 twice"),
                       (["phase2.method=lora", "phase2.update.embeddings=key_rows"], "update is for full fine-tuning")):
        with pytest.raises(ConfigError, match=match):
            config_mod.from_dict({}, bad)
    with pytest.raises(ConfigError, match="contrast=999"):
        levers.check(PreserveConfig(contrast=999), "phase2.preserve", [])


def test_contrast_leaves_out_templates_that_ask_what_the_runs_relations_ask(tmp_path):
    """A user relation whose unrelated prompt is a contrast template ("How old is {subject}?"), or
    that asks about instruments as a template does: those templates are never trained (they would
    train the control's own question), the built-in relations leave every template in, and a
    count the remaining templates cannot serve is refused with the reason."""
    from rote.data.facts import builtin_relation_names, load_relation
    from rote.data.preserve import contrast_templates, contrast_templates_for
    from rote.data.relation_files import load_relations_file
    assert contrast_templates_for([load_relation(n) for n in builtin_relation_names()]) == (contrast_templates(), {})
    (instrument,) = load_relations_file(Path(__file__).parents[1] / "examples" / "relations.yaml")
    usable, left_out = contrast_templates_for([instrument])
    assert "How old is {subject}?" in left_out and "How old is {subject}?" not in usable
    assert "instrument" in left_out["The instrument {subject} plays is the"]
    assert set(usable) | set(left_out) == set(contrast_templates())
    prompts = levers.contrast_prompts(["Ada Brook"], len(usable), seed=0, templates=usable)
    assert not {p.replace("Ada Brook", "{subject}") for p in prompts} & set(left_out)
    with pytest.raises(ConfigError, match=r"contrast=%d: there are %d .* left out" % (len(usable) + 1, len(usable))):
        levers.check(PreserveConfig(contrast=len(usable) + 1), "phase2.preserve", [instrument])


def test_contrast_prompts_ask_each_subject_and_are_seeded():
    prompts = levers.contrast_prompts(["Ada Brook", "Cy Dunn"], 3, seed=1)
    assert len(prompts) == 6 and sum("Ada Brook" in p for p in prompts) == 3
    assert prompts == levers.contrast_prompts(["Ada Brook", "Cy Dunn"], 3, seed=1)
    assert prompts != levers.contrast_prompts(["Ada Brook", "Cy Dunn"], 3, seed=2)


@pytest.mark.slow
def test_build_makes_every_kind_of_anchor(tokenizer, tiny_model_dir):
    p = PreserveConfig(contrast=2, replay=5, known_facts=10)
    anchors, info = levers.build(p, str(tiny_model_dir), "float32", tokenizer, ["Ada Brook", "Cy Dunn"], seed=0,
                                 relations=[])
    kinds = [a.kind for a in anchors]
    assert kinds.count("contrast") == info["contrast"]["anchors"] == 4 - info["contrast"]["not_a_continuation"]
    assert kinds.count("replay") == 5 and info["replay"]["source"] == "text"
    # A random tiny model knows no fact: known facts it gets wrong are left out, and the summary says so.
    assert kinds.count("known_facts") == info["known_facts"]["anchors"] <= info["known_facts"]["base_correct"]
    assert all(a.top_ids is not None for a in anchors)
    samples, info = levers.build(PreserveConfig(replay=3, replay_source="samples"), str(tiny_model_dir), "float32",
                                 tokenizer, [], seed=0, relations=[])
    assert len(samples) == 3 and info["replay"]["source"] == "samples"


def test_replay_samples_end_at_any_end_of_sequence_and_leave_the_random_state(tokenizer, tiny_model, monkeypatch):
    """An Instruct model may list several end-of-sequence ids in its generation config: a sample that
    stops on one that is not the tokenizer's own must be cut there, not carry it and the padding
    after it as anchored text. Sampling is seeded without moving anyone else's random state."""
    other_end = 7
    tiny_model.generation_config.eos_token_id = [tokenizer.eos_token_id, other_end]
    pad = tokenizer.pad_token_id

    def fake_generate(input_ids, **kwargs):
        width = input_ids.shape[1]
        tail = torch.tensor([[11, 12, other_end, pad, pad]] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1) if width else tail

    monkeypatch.setattr(tiny_model, "generate", fake_generate)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    anchors = levers.replay_samples(tiny_model, tokenizer, 2, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a in anchors:
        assert list(a.input_ids[-2:]) == [11, 12]  # cut at the other end id


@pytest.mark.slow
def test_a_run_trains_its_levers_in_both_phases_and_the_baseline_reads_them(tokenizer, tiny_model_dir, tmp_path):
    from pathlib import Path

    from rote.fileio import read_json
    from rote.runner import run
    smoke = Path(__file__).parent.parent / "configs" / "smoke.yaml"
    levers_on = ["phase1.preserve.replay=4", "phase2.preserve.contrast=2", "phase2.preserve.target=greedy",
                 "phase2.update.embeddings=key_rows", "phase2.update.layers=[-1]", "eval.stages=[phase2]"]
    cfg = config_mod.load(smoke, [f"model.name={tiny_model_dir}", f"out_dir={tmp_path}", *levers_on])
    run_dir = run(cfg, quiet=True)
    p1, p2 = read_json(run_dir / "phase1" / "summary.json"), read_json(run_dir / "phase2" / "summary.json")
    assert p1["preserve"]["replay"] == {"anchors": 4, "source": "text"} and "trainable_parameters" not in p1
    facts = [json.loads(x) for x in (run_dir / "facts.jsonl").read_text().splitlines()]
    trained = {f["subject"] for f in facts if f["split"] == "phase2"}
    assert p2["preserve"]["contrast"]["prompts"] == 2 * len(trained) < 2 * len({f["subject"] for f in facts})
    assert p2["trainable_parameters"] < sum(p.numel() for p in load_model(str(tiny_model_dir)).parameters())
    rows = [json.loads(x) for x in (run_dir / "phase2" / "metrics.jsonl").read_text().splitlines()]
    assert all("preserve_loss" in r for r in rows)
    plain = config_mod.with_arm(cfg, "plain_finetune", ["name=plain", "phase1.preserve.contrast=1"])
    summary = read_json(run(plain, quiet=True) / "phase1" / "summary.json")
    # The plain arm trains every fact, but contrast still asks about the phase-2 people only: the
    # held-out people's unrelated prompts stay the control it is measured on, as the method's.
    assert summary["preserve"]["contrast"]["prompts"] == len(trained) < len({f["subject"] for f in facts})
    assert summary["preserve"]["contrast"]["templates_left_out"] == {}
    assert summary["preserve"]["replay"]["anchors"] == 4
