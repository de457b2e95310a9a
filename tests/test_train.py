"""The training loop on the tiny model: it learns, it is reproducible, splits do not change it."""
import json

import pytest
import torch

from rote.config import KeyConfig, Phase1Config, TrainConfig
from rote.data.facts import load_relation
from rote.data.synth import make_facts
from rote.evaluation.scoring import key_accuracy
from rote.training.encode import encode
from rote.training.loop import epoch_batches, epoch_order, lr_factor, train
from rote.training.models import add_key_tokens, load_model
from rote.training.phases import memorize, phase1_examples


def _examples(tok):
    return [encode(tok, f"Gene Finley{i} was born in", " Paris") for i in range(6)]


def test_loss_goes_down_and_parameters_change(tokenizer, tiny_model, tmp_path):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    cfg = TrainConfig(epochs=8, lr=3e-3, batch_size=3, warmup_steps=0, schedule="constant", precision="fp32")
    summary = train(tiny_model, _examples(tokenizer), cfg, tokenizer.pad_token_id, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(rows) == 16
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert {"step", "epoch", "loss", "lr", "tokens_per_s"} <= set(rows[0])
    changed = [n for n, p in tiny_model.named_parameters() if not torch.equal(p, before[n])]
    assert "model.embed_tokens.weight" in changed and len(changed) == len(before)


def test_same_seed_same_weights(tokenizer, tiny_model_dir, tmp_path):
    cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=2, precision="fp32")
    weights = []
    for run in range(2):
        model = load_model(str(tiny_model_dir))
        train(model, _examples(tokenizer), cfg, tokenizer.pad_token_id, tmp_path / str(run), seed=5)
        weights.append(model.model.embed_tokens.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_grad_accumulation_gives_the_same_update(tokenizer, tiny_model_dir, tmp_path):
    """batch_size is the global batch: 1 micro-batch of 4 == 4 micro-batches of 1 (token-weighted)."""
    examples = [encode(tokenizer, f"Gene Finley{i} was born in", t) for i, t in enumerate([" Paris", " San Sebastian", " Lyon", " Buenos Aires"])]
    results = []
    for accum in (1, 4):
        model = load_model(str(tiny_model_dir))
        cfg = TrainConfig(epochs=1, lr=1e-2, batch_size=4, grad_accum=accum, precision="fp32", max_grad_norm=0)
        train(model, examples, cfg, tokenizer.pad_token_id, tmp_path / str(accum))
        results.append(model.model.embed_tokens.weight.detach().clone())
    # Adam's first step is about lr * sign(gradient), so a weighting error flips signs and moves weights
    # by ~2 * lr = 2e-2; summing the same fp32 gradients in another order moves the few elements whose
    # gradient is near Adam's eps by ~1e-6 (1.08e-6 measured on an AVX2 CPU), hence 1e-5 (1e-3 * lr).
    assert torch.allclose(results[0], results[1], atol=1e-5)


def test_schedule_and_order():
    assert lr_factor(0, 100, 5, "cosine") == pytest.approx(0.2)
    assert lr_factor(5, 100, 5, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 5, "cosine") == pytest.approx(0.0)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    assert sorted(epoch_order(10, 0, 1)) == list(range(10))


def test_length_buckets_keep_every_example_once_and_cut_padding():
    lengths = [5 + (i * 7919) % 23 for i in range(1000)]
    plain = epoch_batches(lengths, 16, seed=3, epoch=1)
    bucketed = epoch_batches(lengths, 16, seed=3, epoch=1, buckets=True)
    assert len(bucketed) == len(plain) == 63 and all(len(b) <= 16 for b in bucketed)
    assert sorted(i for b in bucketed for i in b) == list(range(1000))
    assert bucketed != epoch_batches(lengths, 16, seed=3, epoch=2, buckets=True)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert padding(bucketed) < 0.2 * padding(plain)


def test_bucketed_training_sees_the_same_supervised_tokens(tokenizer, tiny_model_dir, tmp_path):
    cities = [" Paris", " San Sebastian de los Reyes", " Lyon", " Buenos Aires", " Rio de Janeiro", " Ulm"]
    examples = [encode(tokenizer, f"Gene Finley{i} was born in", c) for i, c in enumerate(cities * 3)]
    seen = {}
    for buckets in (False, True):
        cfg = TrainConfig(epochs=2, lr=1e-3, batch_size=4, length_buckets=buckets, precision="fp32")
        out = tmp_path / str(buckets)
        summary = train(load_model(str(tiny_model_dir)), examples, cfg, tokenizer.pad_token_id, out)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        seen[buckets] = (summary["steps"], summary["supervised_tokens"],
                         [sum(r["supervised_tokens"] for r in rows if r["epoch"] == e) for e in (1, 2)])
    assert seen[True] == seen[False]
    assert seen[True][1] == 2 * sum(sum(1 for x in e.labels if x != -100) for e in examples)


def test_until_memorized_stops_and_records_the_epoch(tokenizer, tiny_model_dir, tmp_path):
    from rote.training.models import load_tokenizer
    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir))
    rel = load_relation("capital")
    add_key_tokens(model, tok, [rel.key_token])
    facts = make_facts([rel], 2, 1, n_options=4, seed=0)
    cfg = Phase1Config(epochs=60, until="memorized", lr=1e-2, batch_size=2, warmup_steps=0, schedule="constant")
    summary = memorize(model, tok, facts, {"capital": rel}, KeyConfig(), cfg, tmp_path, seed=0,
                       measure=lambda: key_accuracy(model, tok, facts, {"capital": rel}, KeyConfig()))
    assert summary["memorized_at_epoch"] is not None and summary["epochs"] == summary["memorized_at_epoch"] < 60
    assert summary["stopped_early"]
    assert summary["key_accuracy_by_epoch"][-1]["key_accuracy"] == 1.0
    assert key_accuracy(model, tok, facts, {"capital": rel}, KeyConfig()) == 1.0


def test_phase1_examples_follow_mask_and_suffix(tokenizer):
    tok = tokenizer
    rel = load_relation("capital")
    facts = make_facts([rel], 2, 1, n_options=4, seed=0)
    key = KeyConfig(style="word", suffix="period")  # no added token needed for this check
    (ex, _) = phase1_examples(tok, facts, {"capital": rel}, key, "object")
    text = tok.decode([t for t in ex.labels if t != -100])
    assert text == f" {facts[0].object}."
    assert tok.decode(ex.input_ids).startswith(f"{facts[0].subject} blicketP36")
