"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random model with its vocabulary.

Everything here is offline. The bundled model is converted once into the user's normal cache
(ROTE_CACHE or ~/.cache/rote) and reused by later runs; only that first conversion is slow
(~25 s on 2 CPU cores). torch and transformers are imported by the fixtures that need them, not
here, so the torch-free tests run (and are collected) without them.
"""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_evaluation_reuse(monkeypatch):
    """Every run measures its base model: a test that changes evaluation (a patched scorer) is not
    served another test's stored one. tests/test_reuse.py turns reuse on, in a cache of its own."""
    from rote.evaluation.reuse import ENV
    monkeypatch.setenv(ENV, "0")


@pytest.fixture(scope="session")
def smollm_dir():
    """Folder of the converted bundled SmolLM2-135M (plain Hugging Face layout)."""
    from rote.training import models
    return models.prepare("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smollm_dir):
    """The real SmolLM2 tokenizer (49,152 tokens). Session-wide: do not add tokens to it."""
    from rote.training import models
    return models.load_tokenizer(str(smollm_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A random 2-layer Llama with SmolLM2's real tokenizer and vocabulary size, saved as a folder
    (tests/helpers/tiny.py: the same model scripts/smoke_run.py builds)."""
    from helpers.tiny import save_tiny_llama
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer)


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh load of the tiny model, so a test may change it."""
    from rote.training import models
    return models.load_model(str(tiny_model_dir))
