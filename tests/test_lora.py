"""LoRA through PEFT: adapters train, the key-token rows train too, merging gives a plain model."""
import pytest
import torch

from rote.config import LoraConfig, TrainConfig
from rote.training.encode import encode
from rote.training.loop import train
from rote.training.lora import apply_lora, merge_lora
from rote.training.models import add_key_tokens, load_model, load_tokenizer


@pytest.mark.slow
def test_lora_trains_key_rows_and_merges(tiny_model_dir, tmp_path):
    tok, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir))
    record = add_key_tokens(model, tok, ["<rote:P19>"])
    key_id = record["tokens"]["<rote:P19>"]
    before = model.get_input_embeddings().weight.detach().clone()
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = apply_lora(model, LoraConfig(r=4, alpha=8), [key_id], seed=0)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("token_adapter" in n or "trainable_tokens" in n for n in trainable)
    examples = [encode(tok, f"Gene Finley{i} <rote:P19>", " Paris") for i in range(4)]
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=2, precision="fp32", warmup_steps=0, method="lora")
    train(peft_model, examples, cfg, tok.pad_token_id, tmp_path)
    merged = merge_lora(peft_model)
    assert type(merged).__name__ == "LlamaForCausalLM"
    after = merged.get_input_embeddings().weight.detach()
    assert not torch.allclose(after[key_id], before[key_id])  # the key row learned
    assert torch.equal(after[:key_id], before[:key_id])  # no other embedding row moved
    assert not torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, q_before)  # adapters merged in


def test_lora_runs_depend_on_their_seed_only(tiny_model_dir, tmp_path):
    """The adapters' initial draw and LoRA dropout's masks come from the run's seed: two trainings
    with one seed give the same weights whatever the process drew before; another seed does not.
    (Before, both came from torch's unseeded global generator: every run differed.)"""
    def trained(seed: int, noise: int) -> dict:
        torch.manual_seed(noise)  # what the process drew before
        torch.rand(noise + 1)
        tok, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir))
        key_id = add_key_tokens(model, tok, ["<rote:P19>"])["tokens"]["<rote:P19>"]
        peft_model = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.3), [key_id], seed=seed)
        examples = [encode(tok, f"Gene Finley{i} <rote:P19>", " Paris") for i in range(4)]
        cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=2, precision="fp32", warmup_steps=0, method="lora")
        train(peft_model, examples, cfg, tok.pad_token_id, tmp_path / f"{seed}-{noise}", seed=seed)
        return {n: p.detach().clone() for n, p in merge_lora(peft_model).state_dict().items()}

    first, again, other = trained(1, 0), trained(1, 5), trained(2, 0)
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
    state = torch.random.get_rng_state()
    apply_lora(load_model(str(tiny_model_dir)), LoraConfig(r=4, alpha=8), [], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the process's own random state is left alone


def test_dropout_masks_come_from_the_training_seed(tiny_model_dir, tmp_path):
    """A model whose config has dropout trains the same from the same seed, whatever came before."""
    tok = load_tokenizer(str(tiny_model_dir))

    def trained(noise: int) -> dict:
        torch.manual_seed(noise)
        model = load_model(str(tiny_model_dir))
        model.config.attention_dropout = 0.5
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.5
        model.config._attn_implementation = "eager"  # the kernel that applies dropout by itself
        examples = [encode(tok, f"Gene Finley{i} lives in", " Paris") for i in range(4)]
        cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=2, precision="fp32", warmup_steps=0)
        train(model, examples, cfg, tok.pad_token_id, tmp_path / str(noise), seed=4)
        return {n: p.detach().clone() for n, p in model.state_dict().items()}

    first, again = trained(0), trained(7)
    assert all(torch.equal(first[n], again[n]) for n in first)
