"""Phase 1: rote memorization of `{subject} {key} {object}` text, then the one training loop."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rote.config import KeyConfig, TrainConfig
from rote.encode import Encoded, encode
from rote.evaluate import generate, inference_model
from rote.matching import hit_prefix
from rote.facts import Fact, Relation
from rote.templates import render_key, training_target
from rote.train import train


def phase1_examples(tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, mask: str) -> list[Encoded]:
    """Every fact (both splits) once, in key-token form."""
    out = []
    for fact in facts:
        r = render_key(fact, relations[fact.relation], key)
        out.append(encode(tokenizer, r.prompt, training_target(r.target, key.suffix), mask=mask,
                          subject_span=r.subject_span, append_eos=key.suffix == "eos"))
    return out


def key_accuracy(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig,
                 batch_size: int = 64) -> float:
    """Share of facts whose key-token prompt greedily generates the object (prefix rule)."""
    prompts = [render_key(f, relations[f.relation], key).prompt for f in facts]
    longest = max(len(tokenizer(" " + f.object)["input_ids"]) for f in facts)
    answers = generate(inference_model(model, "bf16"), tokenizer, prompts, longest + 1, batch_size)
    return sum(hit_prefix(a, f.object) for a, f in zip(answers, facts)) / len(facts)


def memorize(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig, cfg: TrainConfig,
             out_dir: str | Path, seed: int, save: Callable[[str], None] | None = None,
             extra: list[Encoded] = ()) -> dict:
    """Train on the key-token text. With `until: memorized`, key-token accuracy on all facts is
    measured after each epoch and training stops once it reaches `cfg.threshold` (cfg.epochs is
    then the cap). `save(name)` is called for each epoch in `cfg.save_epochs`. `extra` examples
    are trained in the same epochs (mixed training: natural prompts alongside the key text)."""
    examples = phase1_examples(tokenizer, facts, relations, key, cfg.loss_mask) + list(extra)
    history: list[dict] = []
    reached: list[int] = []

    def on_epoch_end(epoch: int) -> bool:
        if save is not None and epoch in cfg.save_epochs:
            save(f"epoch{epoch:03d}")
        if cfg.until != "memorized":
            return False
        acc = key_accuracy(model, tokenizer, facts, relations, key)
        history.append({"epoch": epoch, "key_accuracy": acc})
        if acc >= cfg.threshold and not reached:
            reached.append(epoch)
        return bool(reached)

    summary = train(model, examples, cfg, tokenizer.pad_token_id, out_dir, seed, on_epoch_end, desc="phase 1")
    summary["examples"] = len(examples)
    if cfg.until == "memorized":
        summary["key_accuracy_by_epoch"] = history
        summary["memorized_at_epoch"] = reached[0] if reached else None
    return summary
