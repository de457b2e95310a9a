"""Where the update goes: which weights a phase trains (`phaseN.update`).

- `layers`: the decoder layers trained (0-based, negative from the end); empty: all of them.
- `modules`: inside those layers, only parameters under a module of one of these names (`mlp`,
  `self_attn`, `down_proj`, ...); empty: all.
- `embeddings`: the token embedding and the output head (tied or not) train `all` their rows, only
  the key tokens' rows (`key_rows`: a gradient mask zeroes every other row, and those matrices get
  no weight decay, which would otherwise shrink the frozen rows), or not at all (`frozen`).
Weights outside the decoder layers and the embeddings (the final norm) train only when every
layer and module trains. The defaults train everything, as before this setting existed.
"""
from __future__ import annotations

import re

import torch

from rote.config import UpdateConfig
from rote.errors import ConfigError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_count(model) -> int:
    return int(model.config.num_hidden_layers)


def resolve_layers(layers: tuple[int, ...], count: int, where: str) -> set[int]:
    """0-based layer indices from `layers` (negative counts from the end); an index outside the
    model is a ConfigError naming it."""
    out = set()
    for i in layers:
        if not -count <= i < count:
            raise ConfigError(f"{where}: layer {i} does not exist (the model has {count} layers: 0..{count - 1})")
        out.add(i % count)
    return out


def restrict(model, update: UpdateConfig, key_ids: list[int], where: str = "update") -> dict:
    """Freeze what `update` does not train (requires_grad False, or a row mask on the embeddings).
    Returns {"trainable": parameters that train, "frozen_decay": parameters that must not decay,
    "hooks": the gradient-mask handles}; a no-op for the defaults."""
    embeddings = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        embeddings.add(id(model.get_output_embeddings().weight))
    layers = resolve_layers(update.layers, layer_count(model), f"{where}.layers") if update.layers else None
    everything = not update.layers and not update.modules
    if update.modules:
        names = {part for module_name, _ in model.named_modules() for part in module_name.split(".")}
        missing = [m for m in update.modules if m not in names]
        if missing:
            raise ConfigError(f"{where}.modules: the model has no module named {missing[0]!r}")
    hooks, frozen_decay, seen = [], set(), set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # a tied matrix comes up once
            continue
        seen.add(id(param))
        if id(param) in embeddings:
            param.requires_grad_(update.embeddings != "frozen")
            if update.embeddings == "key_rows":
                if not key_ids:
                    raise ConfigError(f"{where}.embeddings: key_rows, but this run adds no key tokens")
                hooks.append(param.register_hook(_rows_only(param.shape[0], key_ids)))
                frozen_decay.add(param)
            continue
        match = _LAYER.search(name)
        if match is None:
            param.requires_grad_(everything)
            continue
        in_layer = layers is None or int(match.group(1)) in layers
        in_module = not update.modules or any(m in name.split(".") for m in update.modules)
        param.requires_grad_(in_layer and in_module)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen_decay": frozen_decay, "hooks": hooks}


def _rows_only(rows: int, keep: list[int]):
    mask = torch.zeros(rows, 1, dtype=torch.bool)
    mask[sorted(keep)] = True

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * mask.to(device=grad.device, dtype=grad.dtype)
    return hook


def release(model, restricted: dict) -> None:
    """Undo `restrict`: every parameter trainable again, the gradient masks removed (the next
    phase starts from the defaults)."""
    for handle in restricted["hooks"]:
        handle.remove()
    for param in model.parameters():
        param.requires_grad_(True)
