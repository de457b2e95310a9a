"""The anchors of a phase's levers against damage (`phaseN.preserve`), built from the base model.

Each lever adds examples whose target is what the *base* model (the run's `model.name`, loaded
afresh, so phase 2 is anchored to the original model and not to phase 1's) does on them:

- contrast: for each person of the phase-2 split (subjects of a relation whose subject_kind is
  person: the templates ask about a person), `contrast` questions that are not any relation's
  question (rote/data/contrast.yaml, seeded choice per subject), anchored along the base model's
  greedy answer and the token that ends it. Never about a held-out person, in any arm or phase,
  and never a template that overlaps a prompt of the run's relations or asks about their topic
  (`rote.data.preserve.contrast_templates_for`): the held-out people's unrelated prompts stay a
  held-out control.
- replay: general text. `text`: 32-token windows of rote/data/replay.txt (kept apart from the
  perplexity paragraphs); `samples`: the base model's own sampled continuations of
  rote/data/replay_openings.yaml. Always matched by KL.
- known_facts: well-known facts (rote/data/known_facts.yaml, disjoint from the locality probes)
  that the base model answers correctly here, anchored along its answer.

The training loop (rote.training.loop) trains the anchors beside the phase's own examples, with
the loss of rote.training.preserve. A plain fine-tuning arm reads the same settings (phase1.*).
"""
from __future__ import annotations

import random

from rote.config import PreserveConfig
from rote.data import preserve as preserve_data
from rote.errors import ConfigError

ANSWER_TOKENS = 8  # greedy tokens of the base model's answer a contrast / known-fact anchor follows
REPLAY_TOKENS = 32  # tokens per replay window or sample


def check(p: PreserveConfig, where: str, relations) -> None:
    """Counts the shipped data can serve a run of `relations`; called before a run writes anything."""
    usable, left_out = preserve_data.contrast_templates_for(relations)
    if p.contrast > len(usable):
        why = f" ({len(left_out)} left out for this run's relations, e.g. {next(iter(left_out))!r}: " \
              f"{next(iter(left_out.values()))})" if left_out else ""
        raise ConfigError(f"{where}.contrast={p.contrast}: there are {len(usable)} contrast templates per subject{why}")


def active(p: PreserveConfig) -> bool:
    return bool(p.contrast or p.replay or p.known_facts)


def build(p: PreserveConfig, base_name: str, dtype: str, tokenizer, subjects: list[str], seed: int,
          relations, chat=None) -> tuple[list, dict]:
    """(anchors with their base-model targets, a summary: how many of each kind, and why any were
    left out). `tokenizer` is the trained model's (its key tokens never occur in these texts);
    `relations` are the ones the run trains and asks (contrast leaves their questions alone). Under a
    chat template (`chat`, rote.data.chat.ChatFrame) the contrast questions and known facts are asked
    in their turn, as the prompts they guard; replay stays raw text."""
    from rote.training import models, processes
    from rote.training.preserve import attach_targets

    base = processes.to_device(models.load_model(base_name, dtype))  # its answers and targets where training runs
    base.eval()
    anchors, info = [], {}
    if p.contrast:
        templates, left_out = preserve_data.contrast_templates_for(relations)
        prompts = contrast_prompts(subjects, p.contrast, seed, templates)
        made, info["contrast"] = _answer_anchors(base, tokenizer, prompts, "contrast", p.target == "greedy", chat=chat)
        info["contrast"]["templates_left_out"] = left_out
        anchors += made
    if p.replay:
        made = replay_samples(base, tokenizer, p.replay, seed) if p.replay_source == "samples" \
            else replay_windows(tokenizer, p.replay, seed)
        info["replay"] = {"anchors": len(made), "source": p.replay_source}
        anchors += made
    if p.known_facts:
        made, info["known_facts"] = known_fact_anchors(base, tokenizer, p.known_facts, p.target == "greedy", chat)
        anchors += made
    anchors = attach_targets(base, anchors, tokenizer.pad_token_id)
    info.update({"target": p.target, "weight": p.weight, "batch_size": p.batch_size,
                 "anchored_positions": sum(len(a.positions) for a in anchors)})
    return anchors, info


def contrast_prompts(subjects: list[str], per_subject: int, seed: int, templates=None) -> list[str]:
    """`per_subject` of `templates` (default: every contrast template) for each subject, a seeded
    choice per subject."""
    templates = list(templates if templates is not None else preserve_data.contrast_templates())
    rng = random.Random(f"contrast-{seed}")
    return [t.replace("{subject}", s) for s in subjects for t in rng.sample(templates, per_subject)]


def _answer_anchors(base, tokenizer, prompts: list[str], kind: str, hard: bool, keep=None,
                    chat=None) -> tuple[list, dict]:
    """Anchors along the base model's greedy answer to each prompt (`keep(prompt_index, answer)`
    may drop some), the prompt rendered in its turn under a chat template (`chat`). A prompt whose
    answer does not re-tokenize as a continuation is left out."""
    from rote.evaluation.scoring import generate
    from rote.training.preserve import continuation_anchor

    if chat is not None:
        prompts = [chat.text(prompt) for prompt in prompts]
    answers = generate(base, tokenizer, prompts, ANSWER_TOKENS, batch_size=64, precision="fp32", chat=chat)
    out, untokenizable, dropped = [], 0, 0
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        if keep is not None and not keep(i, answer):
            dropped += 1
            continue
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + answer)["input_ids"]
        if ids[:len(prompt_ids)] != prompt_ids:
            untokenizable += 1
            continue
        out.append(continuation_anchor(prompt_ids, ids, kind, hard))
    return out, {"prompts": len(prompts), "anchors": len(out), "not_a_continuation": untokenizable,
                 "empty_answers": sum(1 for a in answers if not a.strip()), "dropped": dropped}


def known_fact_anchors(base, tokenizer, most: int, hard: bool, chat=None) -> tuple[list, dict]:
    """The first `most` known facts the base model answers right (prefix rule; a sentence answering
    in a chat user turn: it names the answer), along its answer."""
    from rote.data.templates import prompt_form
    from rote.evaluation.matching import answers as counts
    facts = preserve_data.known_facts()
    sentence = [chat is not None and chat.as_user(prompt_form(f["prompt"])) for f in facts]
    anchors, info = _answer_anchors(base, tokenizer, [f["prompt"] for f in facts], "known_facts", hard,
                                    keep=lambda i, answer: counts(answer, facts[i]["answer"], sentence[i]), chat=chat)
    info["base_correct"] = len(anchors) + info["not_a_continuation"]
    return anchors[:most], {**info, "anchors": len(anchors[:most])}


def replay_windows(tokenizer, count: int, seed: int) -> list:
    """`count` windows of REPLAY_TOKENS tokens of the replay text (a seeded choice; all when fewer)."""
    from rote.training.preserve import text_anchor
    windows = []
    for text in preserve_data.replay_paragraphs():
        ids = tokenizer(text)["input_ids"]
        windows += [ids[i:i + REPLAY_TOKENS] for i in range(0, len(ids) - 1, REPLAY_TOKENS) if len(ids[i:i + REPLAY_TOKENS]) > 1]
    chosen = random.Random(f"replay-{seed}").sample(range(len(windows)), min(count, len(windows)))
    return [text_anchor(windows[i], "replay") for i in sorted(chosen)]


def replay_samples(base, tokenizer, count: int, seed: int) -> list:
    """`count` continuations sampled from the base model (temperature 1, seeded) after the replay
    openings, in turn; anchored from the opening's last token on."""
    import torch
    from rote.evaluation.scoring import PLAIN_DECODING, end_of_sequence_ids
    from rote.training.encode import pad_left
    from rote.training import processes
    from rote.training.preserve import continuation_anchor

    openings = preserve_data.replay_openings()
    prompts = [openings[i % len(openings)] for i in range(count)]
    stops = end_of_sequence_ids(base, tokenizer)  # every id that ends a sample (an Instruct model may list several)
    device = next(base.parameters()).device  # where build() put the base model: a GPU when there is one
    out = []
    # Seeded samples; the random state is left as it was found.
    with processes.seeded(seed):
        for first in range(0, len(prompts), 32):
            ids = [tokenizer(p)["input_ids"] for p in prompts[first:first + 32]]
            batch = {k: v.to(device) for k, v in pad_left(ids, tokenizer.pad_token_id).items()}
            with torch.no_grad():
                # plain sampling at temperature 1, whatever the model's generation config sets
                new = base.generate(**batch, **PLAIN_DECODING, max_new_tokens=REPLAY_TOKENS, do_sample=True,
                                    temperature=1.0, top_k=0, top_p=1.0, min_p=None, typical_p=1.0,
                                    epsilon_cutoff=0.0, eta_cutoff=0.0, pad_token_id=tokenizer.pad_token_id)
            width = batch["input_ids"].shape[1]
            for prompt_ids, row in zip(ids, new.tolist()):
                sampled = row[width:]
                end = next((k for k, t in enumerate(sampled) if t in stops), len(sampled))  # its end, then padding
                out.append(continuation_anchor(prompt_ids, prompt_ids + sampled[:end], "replay", False))
    return out
