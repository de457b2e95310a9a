"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random model with its vocabulary.

Everything here is offline. The bundled model is converted once into the
user's normal cache (ROTE_CACHE or ~/.cache/rote) and reused by later runs;
only that first conversion is slow (~25 s on 2 CPU cores).
"""

from __future__ import annotations

import pytest
import torch

from rote import models


@pytest.fixture(scope="session")
def smollm_dir():
    """Folder of the converted bundled SmolLM2-135M (plain Hugging Face layout)."""
    return models.prepare("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smollm_dir):
    """The real SmolLM2 tokenizer (49,152 tokens). Session-wide: do not add tokens to it."""
    return models.load_tokenizer(str(smollm_dir))


def _save_tiny_llama(folder, tokenizer, vocab_size: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A random 2-layer Llama with SmolLM2's real tokenizer and vocabulary size, saved as a folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    _save_tiny_llama(folder, tokenizer, vocab_size=len(tokenizer))
    return folder


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh load of the tiny model, so a test may change it."""
    return models.load_model(str(tiny_model_dir))
