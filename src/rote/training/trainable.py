"""Where the update goes: which weights a phase trains (`phaseN.update`).

- `layers`: the decoder layers trained (0-based, negative from the end); empty: all of them.
- `modules`: inside those layers, only parameters under a module of one of these names (`mlp`,
  `self_attn`, `down_proj`, ...); empty: all.
- `embeddings`: the token embedding and the output head (tied or not) train `all` their rows, only
  the key tokens' rows (`key_rows`: a gradient mask zeroes every other row, and those matrices get
  no weight decay, which would otherwise shrink the frozen rows), or not at all (`frozen`).
  `key_rows_gradient: rows` trains the key rows without the matrix's gradient: the matrix is frozen
  and a parameter viewing its block of key rows (`_train_rows`) is trained in its place.
Weights outside the decoder layers and the embeddings (the final norm) train only when every
layer and module trains. The defaults train everything, as before this setting existed.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from rote.config import UpdateConfig
from rote.errors import ConfigError


def layer_count(model) -> int:
    return int(model.config.num_hidden_layers)


def decoder_layers(model) -> str | None:
    """The name of the model's list of decoder layers: the ModuleList of `num_hidden_layers` modules
    holding the most parameters (`model.layers` in Llama and Qwen, `transformer.h` in GPT-2 and
    Falcon, `transformer.blocks` in MPT); None when there is none."""
    count, best, most = layer_count(model), None, -1
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            size = sum(p.numel() for p in module.parameters())
            if size > most:
                best, most = name, size
    return best


def resolve_layers(layers: tuple[int, ...], count: int, where: str) -> set[int]:
    """0-based layer indices from `layers` (negative counts from the end); an index outside the
    model is a ConfigError naming it."""
    out = set()
    for i in layers:
        if not -count <= i < count:
            raise ConfigError(f"{where}: layer {i} does not exist (the model has {count} layers: 0..{count - 1})")
        out.add(i % count)
    return out


def check_update(model, update: UpdateConfig, where: str = "update") -> tuple[set[int] | None, str | None]:
    """The layers and the decoder-layer list `update` names, checked against `model` (which may be a
    weightless skeleton: the runner checks before anything is written). Raises ConfigError naming
    the layer or module the model does not have."""
    layers = resolve_layers(update.layers, layer_count(model), f"{where}.layers") if update.layers else None
    everything = not update.layers and not update.modules
    stack = None if everything else decoder_layers(model)  # every parameter trains: no layer to find
    if not everything and stack is None:
        raise ConfigError(f"{where}.layers / {where}.modules: cannot find this model's decoder layers (no list of "
                          f"{layer_count(model)} modules, its num_hidden_layers); train every layer or name none")
    if update.modules:
        names = {part for module_name, _ in model.named_modules() for part in module_name.split(".")}
        missing = [m for m in update.modules if m not in names]
        if missing:
            raise ConfigError(f"{where}.modules: the model has no module named {missing[0]!r}")
    return layers, stack


def restrict(model, update: UpdateConfig, key_ids: list[int], where: str = "update") -> dict:
    """Freeze what `update` does not train (requires_grad False, or a row mask on the embeddings).
    Returns {"trainable": parameters that train, "frozen_decay": parameters that must not decay
    (with `key_rows_gradient: rows`, the key-row blocks, which are not the model's parameters: the
    training loop trains them too), "hooks": the hook handles}; a no-op for the defaults."""
    embeddings = {id(model.get_input_embeddings().weight)}
    if model.get_output_embeddings() is not None:
        embeddings.add(id(model.get_output_embeddings().weight))
    layers, stack = check_update(model, update, where)
    everything = not update.layers and not update.modules
    in_stack = re.compile(rf"^{re.escape(stack)}\.(\d+)\." if stack else r"(?!)")
    hooks, frozen_decay, seen, by_rows = [], set(), set(), 0
    for name, param in model.named_parameters():
        if id(param) in seen:  # a tied matrix comes up once
            continue
        seen.add(id(param))
        if id(param) in embeddings:
            param.requires_grad_(update.embeddings != "frozen")
            if update.embeddings == "key_rows":
                if not key_ids:
                    raise ConfigError(f"{where}.embeddings: key_rows, but this run adds no key tokens")
                if update.key_rows_gradient == "rows":
                    block, handles = _train_rows(model, param, key_ids)
                    hooks += handles
                    frozen_decay.add(block)
                    by_rows += param.numel()  # counted as under `masked`: the matrix is what trains
                else:
                    hooks.append(param.register_hook(_rows_only(param.shape[0], key_ids)))
                    frozen_decay.add(param)
            continue
        match = in_stack.match(name)
        if match is None:
            param.requires_grad_(everything)
            continue
        in_layer = layers is None or int(match.group(1)) in layers
        in_module = not update.modules or any(m in name.split(".") for m in update.modules)
        param.requires_grad_(in_layer and in_module)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) + by_rows
    return {"trainable": trainable, "frozen_decay": frozen_decay, "hooks": hooks}


def trained_apart(model, frozen_decay) -> list:
    """The tensors of `frozen_decay` that train but are not the model's parameters: the key-row
    blocks of `key_rows_gradient: rows` (the optimizer, and whatever keeps a copy of the trained
    weights, must take them besides the model's own)."""
    own = {id(p) for p in model.parameters()}
    return [p for p in frozen_decay if id(p) not in own]


def _rows_only(rows: int, keep: list[int]):
    mask = torch.zeros(rows, 1, dtype=torch.bool)
    mask[sorted(keep)] = True

    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad * mask.to(device=grad.device, dtype=grad.dtype)
    return hook


def _train_rows(model, weight: torch.nn.Parameter, key_ids: list[int]):
    """Train the rows `key_ids` of `weight` (the input embedding and/or the output head) without
    its full gradient. `weight` is frozen; the returned parameter is a view of its block of rows
    min(key_ids)..max(key_ids) (the added key tokens are consecutive ids: exactly their rows), so
    the optimizer's updates land in the matrix itself. While gradients are on, forward hooks put
    the block into the computation: the embedding's output at ids inside the block comes from it,
    and the head's logits of the block's ids are computed from it. Without gradients (evaluation)
    the hooks stand aside: the matrix holds the same values. Returns (block, hook handles)."""
    first, last = min(key_ids), max(key_ids) + 1
    weight.requires_grad_(False)
    block = torch.nn.Parameter(weight.detach()[first:last])
    handles = []
    if last - first > len(set(key_ids)):  # other rows inside the block stay frozen
        handles.append(block.register_hook(_rows_only(last - first, [i - first for i in key_ids])))

    def embed(module, args, out):
        if not torch.is_grad_enabled():
            return None
        ids = args[0]
        inside = ((ids >= first) & (ids < last)).unsqueeze(-1)
        return torch.where(inside, block[(ids - first).clamp(0, last - first - 1)].to(out.dtype), out)

    def head(module, args, out):
        if not torch.is_grad_enabled():
            return None
        bias = None if module.bias is None else module.bias[first:last]
        rows = F.linear(args[0], block, bias)  # under autocast in bf16, as the head's other logits
        return torch.cat([out[..., :first], rows.to(out.dtype), out[..., last:]], dim=-1)

    if model.get_input_embeddings().weight is weight:
        handles.append(model.get_input_embeddings().register_forward_hook(embed))
    head_module = model.get_output_embeddings()
    if head_module is not None and head_module.weight is weight:
        handles.append(head_module.register_forward_hook(head))
    return block, handles


def release(model, restricted: dict) -> None:
    """Undo `restrict`: every parameter trainable again, the gradient masks removed (the next
    phase starts from the defaults)."""
    for handle in restricted["hooks"]:
        handle.remove()
    for param in model.parameters():
        param.requires_grad_(True)
