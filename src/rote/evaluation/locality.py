"""Damage to general ability, measured at every evaluated stage of a run (rote.eval_stage.run_eval).

- Locality (specificity): `data/locality.yaml` holds well-known facts (`The capital of France
  is` -> `Paris`). Each model is asked them with greedy decoding (prefix rule); the summary is the
  share of the probes the *base* model answered correctly that are still answered correctly, and
  the share whose generation did not change at all.
- Token agreement with the base model, as knowledge-editing toolkits report locality (EasyEdit's
  `compute_locality_quality`): each probe's prompt and answer are teacher-forced, the argmax token
  at every position that predicts an answer token is kept (`argmax` in each record), and the
  share equal to the base model's at the same positions is averaged over all probes.
- Perplexity on `data/paragraphs.txt` (short public-domain and encyclopedic paragraphs), and its
  ratio to the base model's: a cheap sign of damage to general language ability.

The probes and paragraphs are never trained on (tests/test_locality.py checks the shipped
training texts). The measures import torch when called; comparing a stage with the base model
is pure aggregation (rote.evaluation.metrics.damage_summary).
"""
from __future__ import annotations

import math
from functools import cache
from importlib import resources

import yaml

PROBE_TOKENS = 8  # new tokens per probe: enough for the longest answer ("Alexander Graham Bell")


@cache
def load_probes() -> tuple[dict, ...]:
    raw = yaml.safe_load((resources.files("rote.data") / "locality.yaml").read_text(encoding="utf-8"))
    return tuple({"prompt": p["prompt"], "answer": p["answer"]} for p in raw["probes"])


@cache
def load_paragraphs() -> tuple[str, ...]:
    text = (resources.files("rote.data") / "paragraphs.txt").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return tuple(" ".join(p.split()) for p in "\n".join(lines).split("\n\n") if p.strip())


def asked_probes(chat=None) -> tuple[tuple[dict, ...], list[str], list[bool]]:
    """The probes, each as the model sees it (raw, or under a chat template, `chat`, in its turn as
    the run's own prompts are), and whether it is a chat user turn (answered by a sentence)."""
    from rote.data.templates import prompt_form

    probes = load_probes()
    forms = [prompt_form(p["prompt"]) for p in probes]
    asked = [p["prompt"] if chat is None else chat.text(p["prompt"], f) for p, f in zip(probes, forms)]
    return probes, asked, [chat is not None and chat.as_user(f) for f in forms]


def ask_probes(model, tokenizer, precision: str = "bf16", batch_size: int = 64, chat=None) -> list[dict]:
    """One record per probe: prompt, answer, generation, correct (prefix rule), argmax (the
    teacher-forced answer positions' argmax token ids). Under a chat template (`chat`, a
    rote.data.chat.ChatFrame) each probe is asked in its turn, as the run's own prompts are, and a
    record carries the text the model saw (`asked`); a probe asked in a user turn is answered by a
    sentence, which counts when it names the answer."""
    from rote.evaluation.matching import answers as counts
    from rote.evaluation.scoring import CHAT_EXTRA_TOKENS, generate, inference_model

    probes, asked, sentences = asked_probes(chat)
    answers = generate(inference_model(model, precision), tokenizer, asked,
                       PROBE_TOKENS + (CHAT_EXTRA_TOKENS if chat is not None else 0), batch_size, precision=precision,
                       chat=chat)
    leads = [" " if chat is None else ("" if sentence else " ") for sentence in sentences]
    argmax = answer_argmax(model, tokenizer, probes, asked, leads)
    return [{**p, **({"asked": text} if chat is not None else {}), "generation": a,
             "correct": counts(a, p["answer"], sentence), "argmax": ids}
            for p, text, sentence, a, ids in zip(probes, asked, sentences, answers, argmax)]


def answer_argmax(model, tokenizer, probes, asked: list[str] | None = None,
                  leads: list[str] | None = None) -> list[list[int]]:
    """Per probe, the argmax token at each position that predicts a token of " answer" after the
    prompt (teacher forcing), without autocast (as perplexity), so that stages compare exactly.
    One right-padded batch: a forward per probe cost about as much as all of them together.
    `asked` and `leads`: the prompts as the model sees them and what precedes each answer (chat)."""
    import torch
    from rote.training.encode import encode

    asked = asked or [p["prompt"] for p in probes]
    leads = leads or [" "] * len(probes)
    encoded = [encode(tokenizer, text, lead + p["answer"]) for p, text, lead in zip(probes, asked, leads)]
    longest = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    ids = torch.tensor([list(e.input_ids) + [pad] * (longest - len(e)) for e in encoded], device=device)  # (P, T)
    mask = torch.tensor([[1] * len(e) + [0] * (longest - len(e)) for e in encoded], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits  # (P, T, V); padding only after the answer
    # logits[i] predicts token i + 1: the answer's tokens are target_start .. target_end - 1
    return [logits[k, e.target_start - 1:e.target_end - 1].float().argmax(dim=-1).tolist() for k, e in enumerate(encoded)]


def perplexity(model, tokenizer, paragraphs: tuple[str, ...] | None = None) -> dict:
    """exp(mean next-token negative log-likelihood) over all paragraphs' tokens, in float32 (no
    autocast: small before/after differences are what this is for). Each paragraph is one sequence."""
    import torch
    import torch.nn.functional as F

    paragraphs = paragraphs or load_paragraphs()
    device = next(model.parameters()).device
    total, count, per = 0.0, 0, []
    with torch.no_grad():
        for text in paragraphs:
            ids = torch.tensor([tokenizer(text)["input_ids"]], device=device)  # (1, T)
            logits = model(input_ids=ids).logits.float()[0, :-1]  # (T-1, V)
            nll = F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            n = ids.shape[1] - 1
            total, count = total + nll, count + n
            per.append(round(math.exp(nll / n), 3))
    return {"perplexity": round(math.exp(total / count), 4), "tokens": count, "per_paragraph": per}


def measure(model, tokenizer, precision: str = "bf16", chat=None) -> tuple[list[dict], dict]:
    """One model's locality probe records (ask_probes, in the run's chat rendering) and its perplexity
    (perplexity: the paragraphs stay raw text)."""
    model.eval()
    return ask_probes(model, tokenizer, precision, chat=chat), perplexity(model, tokenizer)
