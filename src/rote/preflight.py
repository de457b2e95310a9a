"""What a run checks before anything is written (`rote run`, and `rote inject` through it): the
relations against the config, the model and its structure, the texts' lengths against its context,
the generation budget, and under a chat template every prompt rendered by the real template. Each
failure is a one-line error naming the value (rote.errors); nothing is written until all pass.
"""
from __future__ import annotations

from rote.arms import eval_config
from rote.config import RunConfig
from rote.data.facts import Fact
from rote.data.factset import check_relations
from rote.errors import ConfigError
from rote.evaluation.queries import build_queries


def check_inputs(cfg: RunConfig, facts: list[Fact]) -> None:
    """Before anything is written: the relations fit the config (rote.data.factset.check_relations),
    the model can be found (ModelError, fast when offline), every fact's texts fit in its context
    (DataError), and eval.max_new_tokens leaves room for the longest answer (ConfigError)."""
    from rote.data.limits import check_lengths
    from rote.evaluation.scoring import generation_budget
    from rote.training import models  # torch-heavy: the stages after this one need it anyway
    from rote import levers
    relations = check_relations(cfg)
    from rote.runner import Session
    asked = Session(cfg, None, facts).asked_relations()
    for phase in ("phase1", "phase2"):
        levers.check(getattr(cfg, phase).preserve, phase + ".preserve", asked)
    context = models.context_length(cfg.model.name)
    tokenizer = models.load_tokenizer(cfg.model.name)
    check_model_structure(cfg)
    ecfg = eval_config(cfg)
    check_chat(cfg, tokenizer, asked)
    check_lengths(tokenizer, context, facts, relations, ecfg.max_new_tokens, ecfg.icl_examples)
    if cfg.eval.max_new_tokens is not None:
        golds = [q.gold for q in build_queries(facts, relations, cfg.key, ecfg, cfg.phase2.n_prompts,
                                               Session.relation(cfg, cfg.eval.repurposed_prompts or cfg.phase2.prompts_from))]
        try:
            generation_budget(tokenizer, golds, cfg.eval.max_new_tokens)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def chat_frame(cfg: RunConfig, tokenizer):
    """The run's chat rendering (model.chat_template, rote.data.chat), or None for raw text; a
    ConfigError naming the model when `on` finds no template."""
    from rote.data import chat
    try:
        return chat.frame_for(cfg.model.chat_template, cfg.model.chat_statements, tokenizer, cfg.model.name)
    except chat.ChatTemplateError as e:
        raise ConfigError(str(e)) from None


def check_chat(cfg: RunConfig, tokenizer, relations) -> None:
    """Under a chat template, every natural prompt the run trains or asks (each relation's templates,
    the levers' contrast questions and known facts, the locality probes) renders through the real
    template as the frame renders it; else a ConfigError naming the prompt and its relation."""
    from rote.data import chat
    from rote.data import preserve as preserve_data
    from rote.data.templates import prompt_form
    from rote.evaluation.locality import load_probes
    frame = chat_frame(cfg, tokenizer)
    if frame is None:
        return
    prompts = []
    for rel in relations:
        templates = [*rel.train_prompts, *rel.unrelated_prompts, *(rel.reverse_prompts or ()),
                     *(t for texts in rel.test_prompts.values() for t in texts)]
        prompts += [(t.replace("{subject}", "Gene Finley").replace("{object}", "Paris"), prompt_form(t),
                     f"relation {rel.name}") for t in templates]
    prompts += [(t.replace("{subject}", "Gene Finley"), prompt_form(t), "a contrast question")
                for t in preserve_data.contrast_templates()]
    prompts += [(f["prompt"], prompt_form(f["prompt"]), "a known fact") for f in preserve_data.known_facts()]
    prompts += [(p["prompt"], prompt_form(p["prompt"]), "a locality probe") for p in load_probes()]
    try:
        chat.check_prompts(tokenizer, frame, prompts)
    except chat.ChatTemplateError as e:
        raise ConfigError(str(e)) from None


def check_model_structure(cfg: RunConfig) -> None:
    """The layers, modules and LoRA targets the phases name exist in the model (checked on a weightless
    skeleton, only when a phase names any): otherwise the error would come after stages finished."""
    from rote.training import models, trainable
    from rote.training.lora import check_targets
    from rote.arms import ARMS
    phases = [(p, getattr(cfg, p)) for p in ("phase1", "phase2")]
    named = [(p, t) for p, t in phases if t.method == "lora" or t.update.layers or t.update.modules]
    edits = ARMS[cfg.arm].edits
    if not named and not edits:
        return
    skeleton = models.skeleton(cfg.model.name)
    if edits:  # the layers an editor writes exist, and have an MLP down-projection
        from rote.editing.locate import decoder_layers, edited_layers
        count = len(decoder_layers(skeleton))
        edited = edited_layers(cfg.arm, cfg.edit)
        wrong = [layer for layer in edited if not -count <= layer < count]
        key = "edit.rome_layer" if cfg.arm == "rome" else "edit.layers"
        if wrong or not edited:
            raise ConfigError(f"{key}={edited}: {cfg.model.name} has {count} decoder layers (0 to {count - 1})")
        if any(layer % count == count - 1 for layer in edited):
            # Nothing after the last layer mixes positions: a value written at the subject's token
            # never reaches the token that predicts the answer.
            raise ConfigError(f"{key}={edited}: an edit of the last decoder layer ({count - 1}) of {cfg.model.name} "
                              f"cannot reach the answer; edit earlier layers")
    for phase, tcfg in named:
        if tcfg.method == "lora":
            check_targets(skeleton, tcfg.lora, phase)
        else:
            trainable.check_update(skeleton, tcfg.update, f"{phase}.update")
