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
    peft_model = apply_lora(model, LoraConfig(r=4, alpha=8), [key_id])
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
