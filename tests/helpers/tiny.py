"""The tiny random model the tests (and scripts/smoke_run.py) train: a 2-layer Llama with the real
SmolLM2 tokenizer and vocabulary, seeded, so two builds on one machine are the same weights."""
from __future__ import annotations

from pathlib import Path


def save_tiny_llama(folder: str | Path, tokenizer, vocab_size: int | None = None) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,  # as SmolLM2
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
