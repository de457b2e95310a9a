"""Where an editor reads and writes: a Llama-style decoder's layers and MLP down-projections (SmolLM2,
Qwen2, Llama: `model.model.layers[i].mlp.down_proj`), and the activations at the subject's last token.

A key is the input of a layer's down-projection (the MLP's hidden activation) at the subject's last
token; a layer output is the residual stream after that layer at the same token (what MEMIT's
target values are written against). Both are read with forward hooks, in float32, batched with
right padding (every request's position is its own).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from rote.errors import ConfigError
from rote.training.encode import pad_right, token_span


@dataclass(frozen=True)
class Request:
    """One edit: the prompt as the model sees it, the subject's character span in it, the target text
    after it (with its leading space, or its turn's end under a chat template)."""
    prompt: str
    subject_span: tuple[int, int]
    target: str


def decoder_layers(model):
    """The model's decoder layers; a model of another layout is a one-line error naming it."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(layers[0], "mlp") or not hasattr(layers[0].mlp, "down_proj"):
        raise ConfigError(f"{type(model).__name__}: the editors need a Llama-style model (model.layers[i].mlp.down_proj)")
    return layers


def edited_layers(editor: str, cfg) -> list[int]:
    """The layers `editor` writes: ROME its one `rome_layer`, MEMIT and AlphaEdit `layers` (edit.*)."""
    return [cfg.rome_layer] if editor == "rome" else list(cfg.layers)


def down_proj(model, layer: int):
    return decoder_layers(model)[layer].mlp.down_proj


def subject_last(tokenizer, request: Request) -> int:
    """The index of the token that ends the subject in the encoded prompt."""
    offsets = tokenizer(request.prompt, return_offsets_mapping=True)["offset_mapping"]
    return token_span(offsets, request.subject_span)[1] - 1


@contextmanager
def hooked(module, pre: bool, fn):
    handle = module.register_forward_pre_hook(fn) if pre else module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def read_at(model, tokenizer, requests: list[Request], layer: int, what: str) -> torch.Tensor:
    """(n, d) float32: each request's key (`what` = "key", the down-projection's input) or layer output
    (`what` = "output", the residual stream after the layer) at its subject's last token."""
    device = next(model.parameters()).device
    ids = [tokenizer(r.prompt)["input_ids"] for r in requests]
    positions = torch.tensor([subject_last(tokenizer, r) for r in requests], device=device)
    batch = {k: v.to(device) for k, v in pad_right(ids, tokenizer.pad_token_id or 0).items()}
    found = {}

    def grab(module, args, output=None):
        x = args[0] if what == "key" else (output[0] if isinstance(output, tuple) else output)
        found["x"] = x[torch.arange(len(requests), device=device), positions].float()

    module = down_proj(model, layer) if what == "key" else decoder_layers(model)[layer]
    with hooked(module, pre=what == "key", fn=(lambda m, a: grab(m, a)) if what == "key" else grab):
        model(**batch)
    return found["x"]


@contextmanager
def shifted_output(model, layer: int, positions: torch.Tensor, delta: torch.Tensor):
    """While inside: the residual stream after `layer` gets `delta` added at each row's position."""
    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[torch.arange(hidden.shape[0], device=hidden.device), positions] += delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    with hooked(decoder_layers(model)[layer], pre=False, fn=add):
        yield
