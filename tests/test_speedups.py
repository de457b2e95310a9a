"""The training step's speed switches (`phaseN.speed`, `update.key_rows_gradient`): each acts, and
each keeps the update within bf16 noise of the default step (bench/bench_train_step.py measures it
on the real model). The tolerance: a switch that changes which bf16 roundings happen moves each
step by at most bf16's relative precision, 2^-8, so after `s` steps the update may differ by s x
2^-8 relative; one that changes no rounding must give the same bits."""
import copy
import dataclasses
import json

import pytest
import torch

from rote import config as config_mod
from rote.config import SpeedConfig, TrainConfig, UpdateConfig
from rote.errors import ConfigError
from rote.training import speedups, trainable
from rote.training.encode import encode
from rote.training.loop import train
from rote.training.models import add_key_tokens, load_model

BF16 = 2.0 ** -8
EPOCHS, BATCH, FACTS = 3, 4, 8
STEPS = EPOCHS * FACTS // BATCH


def _train(tiny_model_dir, tokenizer, tmp_path, speed=SpeedConfig(), update=UpdateConfig(), watch=None):
    """Train the tiny model (a key token added) with `speed` and `update`; returns (the parameters'
    update by name, the loss per step, the model). `watch(model)` runs before training."""
    tok = copy.deepcopy(tokenizer)
    model = load_model(str(tiny_model_dir))
    key_id = add_key_tokens(model, tok, ["<rote:P19>"])["tokens"]["<rote:P19>"]
    # Every token supervised: the key token is also predicted, so the output head's key row trains too.
    examples = [encode(tok, f"Gene Finley{i} <rote:P19>", [" Paris", " Lyon", " San Sebastian"][i % 3], mask="all")
                for i in range(FACTS)]
    restricted = trainable.restrict(model, update, [key_id])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if watch:
        watch(model)
    cfg = TrainConfig(epochs=EPOCHS, lr=1e-3, batch_size=BATCH, warmup_steps=0, weight_decay=0.1, speed=speed,
                      update=update)
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    train(model, examples, cfg, tok.pad_token_id, out, frozen_decay=restricted["frozen_decay"])
    trainable.release(model, restricted)
    update_by_name = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return update_by_name, losses, model


def _relative(a: dict, b: dict, names=None) -> float:
    names = names or list(b)
    diff = torch.cat([(a[n] - b[n]).flatten() for n in names])
    return (diff.norm() / torch.cat([b[n].flatten() for n in names]).norm()).item()


def test_eager_attention_trains_with_eager_and_leaves_the_model_as_loaded(tokenizer, tiny_model_dir, tmp_path):
    seen = []

    def watch(model):
        def record(module, args):
            seen.append((torch.is_grad_enabled(), model.config._attn_implementation))
        model.model.layers[0].self_attn.register_forward_pre_hook(record)

    ref, ref_losses, model = _train(tiny_model_dir, tokenizer, tmp_path)
    assert model.config._attn_implementation == "sdpa"  # the tiny model's own: the switch must change it
    seen.clear()
    got, losses, model = _train(tiny_model_dir, tokenizer, tmp_path, SpeedConfig(attn_implementation="eager"),
                                watch=watch)
    assert {impl for grad, impl in seen if grad} == {"eager"}
    assert model.config._attn_implementation == "sdpa"
    assert not all(torch.equal(got[n], ref[n]) for n in ref)  # another kernel: other bf16 roundings
    assert _relative(got, ref) <= STEPS * BF16
    assert all(abs(a - b) <= (step + 1) * BF16 * b for step, (a, b) in enumerate(zip(losses, ref_losses)))


def test_epoch_end_sees_the_model_own_attention(tokenizer, tiny_model_dir, tmp_path):
    tok = copy.deepcopy(tokenizer)
    model = load_model(str(tiny_model_dir))
    examples = [encode(tok, f"Gene Finley{i} was born in", " Paris") for i in range(4)]
    cfg = TrainConfig(epochs=2, batch_size=2, speed=SpeedConfig(attn_implementation="eager"))
    seen = []
    train(model, examples, cfg, tok.pad_token_id, tmp_path,
          on_epoch_end=lambda epoch: seen.append(model.config._attn_implementation))
    assert seen == ["sdpa", "sdpa"]


def test_keep_memory_gives_the_same_bits(tokenizer, tiny_model_dir, tmp_path):
    ref, ref_losses, _ = _train(tiny_model_dir, tokenizer, tmp_path)
    got, losses, _ = _train(tiny_model_dir, tokenizer, tmp_path, SpeedConfig(keep_memory=True))
    assert losses == ref_losses and all(torch.equal(got[n], ref[n]) for n in ref)


# Minor page faults of filling a fresh 48 MiB buffer right after a 64 MiB one was freed: before,
# inside and after keep_freed_memory. In a process of its own: other tests leave the heap in states
# (large free chunks) that would serve the buffer without the switch.
_FAULTS = """
import resource, torch
from rote.training import speedups
def faults():
    torch.ones(64 * 2**18)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(48 * 2**18)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
out = [faults()]
with speedups.keep_freed_memory():
    out += [faults(), faults()]
print(out + [faults()])
"""


@pytest.mark.skipif(speedups._glibc() is None, reason="keep_memory acts through glibc's mallopt")
def test_keep_memory_reuses_freed_buffers_and_is_undone():
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
    before, *inside, after = json.loads(run.stdout.strip().splitlines()[-1])
    pages = 48 * 2**20 // 4096
    assert before > pages // 2  # 32 MiB or more: mmapped, returned on free, faulted in anew
    assert all(n < pages // 10 for n in inside)  # the freed block is reused
    assert after > pages // 2  # undone


def test_key_rows_gradient_rows_computes_no_dense_gradient(tokenizer, tiny_model_dir, tmp_path):
    update = UpdateConfig(modules=("mlp",), embeddings="key_rows")
    ref, ref_losses, _ = _train(tiny_model_dir, tokenizer, tmp_path, update=update)
    rows = dataclasses.replace(update, key_rows_gradient="rows")
    seen = []

    def watch(model):
        weight = model.get_input_embeddings().weight

        def record(module, args):
            if torch.is_grad_enabled():
                seen.append((weight.requires_grad, weight.grad))
        model.get_input_embeddings().register_forward_pre_hook(record)

    got, losses, model = _train(tiny_model_dir, tokenizer, tmp_path, update=rows, watch=watch)
    assert seen and all(not needs and grad is None for needs, grad in seen)  # the matrix has no gradient
    emb = "model.embed_tokens.weight"
    changed = (got[emb] != 0).any(dim=1).nonzero().flatten().tolist()
    assert changed == (ref[emb] != 0).any(dim=1).nonzero().flatten().tolist() == [len(tokenizer)]
    # The key row (both its input and its output use) and the rest, each within the tolerance.
    assert _relative({emb: got[emb][-1]}, {emb: ref[emb][-1]}) <= STEPS * BF16
    assert _relative(got, ref, [n for n in ref if n != emb]) <= STEPS * BF16
    assert all(abs(a - b) <= (step + 1) * BF16 * b for step, (a, b) in enumerate(zip(losses, ref_losses)))
    assert all(p.requires_grad for p in model.parameters()) and not model.get_input_embeddings()._forward_hooks


def test_key_rows_gradient_rows_keeps_the_trainable_count(tiny_model):
    key_id = tiny_model.get_input_embeddings().weight.shape[0] - 1
    counts = []
    for gradient in ("masked", "rows"):
        model = copy.deepcopy(tiny_model)
        restricted = trainable.restrict(model, UpdateConfig(embeddings="key_rows", key_rows_gradient=gradient), [key_id])
        counts.append(restricted["trainable"])
        trainable.release(model, restricted)
    assert counts[0] == counts[1] == sum(p.numel() for p in tiny_model.parameters())


def test_speed_keys_are_checked_and_read_by_every_training_arm():
    cfg = config_mod.from_dict({"phase1": {"speed": {"attn_implementation": "eager", "keep_memory": True},
                                           "update": {"embeddings": "key_rows", "key_rows_gradient": "rows"}}})
    assert cfg.phase1.speed == SpeedConfig("eager", True) and cfg.phase2.speed == SpeedConfig()
    assert config_mod.from_dict({"arm": "plain_finetune", "phase1": {"speed": {"keep_memory": True}}}).phase1.speed.keep_memory
    for bad, match in (("phase1.speed.attn_implementation=flash", "not one of"),
                       ("phase2.speed.keep_memory=1", "expected true or false"),
                       ("phase1.speed.fast=true", "unknown key 'fast'"),
                       ("phase1.update.key_rows_gradient=sparse", "not one of")):
        with pytest.raises(ConfigError, match=match):
            config_mod.from_dict({}, [bad])


def test_a_study_keeps_its_phase1_run_names_while_the_switches_are_off():
    from rote.study.plan import phase1_key
    off = phase1_key(config_mod.to_dict(config_mod.from_dict({})))
    assert "speed" not in off["phase1"] and "key_rows_gradient" not in off["phase1"]["update"]
    on = phase1_key(config_mod.to_dict(config_mod.from_dict({}, ["phase1.speed.attn_implementation=eager",
                                                                 "phase1.update.key_rows_gradient=rows"])))
    assert on["phase1"]["speed"]["attn_implementation"] == "eager" and on["phase1"]["update"]["key_rows_gradient"] == "rows"
