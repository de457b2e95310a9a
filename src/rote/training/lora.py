"""LoRA through PEFT, with the key-token rows still trainable.

The added key tokens have no meaning before phase 1, so a low-rank update of the existing
weights alone cannot teach them: their embedding rows are trained too, with PEFT's
`trainable_token_indices` (only those rows, not the whole matrix).
"""
from __future__ import annotations

from rote.config import LoraConfig
from rote.errors import ConfigError


def apply_lora(model, cfg: LoraConfig, key_ids: list[int], seed: int):
    """Wrap `model` in a PEFT LoRA model whose key-token embedding rows also train. The adapters'
    random initial weights are drawn from `seed`: the same run gives the same adapters in every
    process, resumed or not."""
    from rote.training.processes import seeded
    try:
        from peft import LoraConfig as PeftLoraConfig, get_peft_model
    except ImportError as e:  # an optional dependency: say how to get it
        raise ImportError("method: lora needs PEFT: pip install 'rote[lora]' (or pip install peft)") from e
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        trainable_token_indices=list(key_ids) or None, task_type="CAUSAL_LM",
    )
    with seeded(seed):
        return get_peft_model(model, peft_cfg)


def check_targets(model, cfg: LoraConfig, where: str) -> None:
    """Every target module names some module of `model` (PEFT matches a module whose name is the
    target or ends in '.target'); ConfigError naming the one that matches none."""
    names = [name for name, _ in model.named_modules()]
    for target in cfg.target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ConfigError(f"{where}.lora.target_modules: the model has no module named {target!r}")


def merge_lora(model):
    """Fold the adapters (and trained token rows) back into a plain transformers model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
