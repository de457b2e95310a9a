"""Per-example evaluation records: greedy generation and multiple-choice log-probabilities.

One record per (fact, prompt set, language, prompt). Aggregation lives in rote.evaluation.metrics.
Scoring encodes each option with the same `encode` as training, so what is trained is what
is scored.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import weakref

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from rote.config import EvalConfig, KeyConfig
from rote.data.facts import Fact, Relation
from rote.data.templates import render_key
from rote.data.chat import ChatFrame
from rote.evaluation.matching import hit_contains, hit_first, hit_prefix, longer_names, names, rank_with_ties_against_gold
from rote.evaluation.queries import Query, other_objects
from rote.training import processes
from rote.training.encode import encode, pad_left

# ---------------------------------------------------------------- model calls

# `generate` fills every argument it is not given from the model folder's generation_config.json,
# and an Instruct model's often sets a repetition penalty or banned n-grams: greedy answers would
# then be penalised for repeating the prompt's words (a subject's name, an in-context example) and
# stop agreeing with the teacher-forced argmax. Every processor that changes which token is chosen
# is set to "off" here, explicitly (a GenerationConfig object of our own would be merged with the
# folder's defaults again). rote.levers samples with the same.
PLAIN_DECODING = dict(num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                      bad_words_ids=None, suppress_tokens=None, begin_suppress_tokens=None, sequence_bias=None,
                      forced_bos_token_id=None, forced_eos_token_id=None, exponential_decay_length_penalty=None,
                      guidance_scale=None, renormalize_logits=False, penalty_alpha=None, dola_layers=None)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, progress: bool = False,
             precision: str = "bf16", share: bool = False, chat: ChatFrame | None = None) -> list[str]:
    """Greedy continuations, batched with left padding; each cut at its first newline, or under a chat
    template (`chat`, the prompts rendered in it) at the end of the assistant's turn (a chat answer may
    run over lines; the turn's end token stops it as end of sequence does). With `share`,
    several processes each run their share of the batches and every process gets all the answers
    (rote.training.processes: every process must call it).

    Plain greedy decoding, whatever the model's generation config asks for (PLAIN_DECODING). A batch
    stops as soon as every row has produced a newline or an end of sequence: the answer is cut at
    the first newline anyway, so the tokens after it were wasted work.
    Special tokens other than end of sequence and padding stay in the text, so that an answer
    like "<rote:P19> Paris" is not scored as "Paris"."""
    pad_id = tokenizer.pad_token_id
    stop_ids = end_of_sequence_ids(model, tokenizer) | (turn_end_ids(tokenizer, chat) if chat else set())
    # A raw answer ends at its first newline; a chat answer at the end of its turn (an end of sequence).
    stopping = None if chat else StoppingCriteriaList([_NewlineSeen(newline_ids(tokenizer))])
    new = _greedy(model, tokenizer, prompts, max_new_tokens, batch_size, progress, precision, share, stop_ids, stopping)
    return [decode_answer(tokenizer, seq, stop_ids | {pad_id}, cut_newline=not chat) for seq in new]


@torch.no_grad()
def continuations(model, tokenizer, prompts: list[str], new_tokens: int, batch_size: int, precision: str = "bf16",
                  chat: ChatFrame | None = None) -> list[tuple[str, str]]:
    """(continuation, answer) per prompt: `new_tokens` greedy tokens that no end of sequence stops (a
    fixed-length generation, as knowledge-editing toolkits measure fluency; special tokens stay
    visible), and the answer within it, cut as `generate` cuts (the first end of sequence or of the
    turn; for a raw prompt, `chat` None, the first newline). The main process's alone (no `share`)."""
    stop_ids = end_of_sequence_ids(model, tokenizer) | (turn_end_ids(tokenizer, chat) if chat else set())
    # An id no token has: generation runs its full length whatever the model emits.
    new = _greedy(model, tokenizer, prompts, new_tokens, batch_size, False, precision, False, {len(tokenizer) + 1}, None)
    return [(tokenizer.decode(seq, skip_special_tokens=False),
             decode_answer(tokenizer, seq, stop_ids, cut_newline=chat is None)) for seq in new]


def _greedy(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, progress: bool, precision: str,
            share: bool, stop_ids: set[int], stopping) -> list[list[int]]:
    """Each prompt's new token ids (PLAIN_DECODING, left-padded batches of similar lengths); a row's
    tokens after its stop id are padding. `share` as `generate`'s."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    share = processes.sharing(model, share)
    batches = [order[first:first + batch_size] for first in range(0, len(order), batch_size)]
    new_ids: dict[int, list[int]] = {}
    for rows in tqdm(processes.my_share(batches, share), desc="generate", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in pad_left([ids[i] for i in rows], pad_id).items()}
        with _autocast(device, precision):
            new = model.generate(**batch, **PLAIN_DECODING, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad_id, eos_token_id=sorted(stop_ids), stopping_criteria=stopping)
        for row, seq in zip(rows, new[:, batch["input_ids"].shape[1]:].tolist()):
            new_ids[row] = seq
    new_ids = processes.merge(new_ids, share)
    return [new_ids[i] for i in range(len(ids))]


# Per tokenizer object, and gone with it: an id() key could be reused by a later tokenizer (another
# model in the same process) and hand it the first one's ids.
_NEWLINE_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def newline_ids(tokenizer) -> torch.Tensor:
    """Ids of every token whose text contains a newline (one scan of the vocabulary per
    tokenizer; transformers' `stop_strings` does a far costlier one at every `generate` call)."""
    if tokenizer not in _NEWLINE_IDS:
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # Byte-level vocabularies write "\n" as "Ċ", SentencePiece's byte fallback as "<0x0A>";
        # others keep it as it is. The decode confirms each candidate.
        _NEWLINE_IDS[tokenizer] = torch.tensor([i for i, t in enumerate(vocab) if t and ("\n" in t or "Ċ" in t or t == "<0x0A>")
                                                and "\n" in tokenizer.decode([i])], dtype=torch.long)
    return _NEWLINE_IDS[tokenizer]


class _NewlineSeen(StoppingCriteria):
    """Marks a row finished once it has generated a token with a newline: the answer is cut there."""

    def __init__(self, ids: torch.Tensor):
        self.ids = ids

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.isin(input_ids[:, -1], self.ids.to(input_ids.device))


def end_of_sequence_ids(model, tokenizer) -> set[int]:
    """The ids that end a generation: the tokenizer's end of sequence and the model's
    generation config's (an instruct model may list several)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def turn_end_ids(tokenizer, chat: ChatFrame) -> set[int]:
    """The id of the token that ends an assistant's turn (`chat.answer_end`, e.g. "<|im_end|>" or
    "<|eot_id|>"), when it is one token: a template whose end of turn is not the tokenizer's end of
    sequence still stops there."""
    ids = tokenizer(chat.answer_end, add_special_tokens=False)["input_ids"] if chat.answer_end else []
    return set(ids[:1]) if len(ids) == 1 else set()


def decode_answer(tokenizer, seq: list[int], stop_ids: set[int], cut_newline: bool = True) -> str:
    """The generated text up to the first stop id (end of sequence or padding) and, unless told
    otherwise (a chat answer), the first newline. Other special tokens, the key tokens among them,
    are kept visible."""
    end = next((k for k, t in enumerate(seq) if t in stop_ids), len(seq))
    text = tokenizer.decode(seq[:end], skip_special_tokens=False)
    return text.split("\n", 1)[0] if cut_newline else text


# A chat answer is a sentence that names the object somewhere in it ("The infamous actor Gene Finley
# was born in the city of Sydney, Australia"): this many tokens beyond the longest gold answer.
# LOG.md 2026-12-07 has the measurement: where the bundled model's chat answers name their first object.
CHAT_EXTRA_TOKENS = 24


def generation_budget(tokenizer, golds, requested: int | None, chat: bool = False) -> int:
    """New tokens to generate: enough for the longest gold answer plus a token that shows where
    it ends (the prefix rule checks the word boundary), or under a chat template CHAT_EXTRA_TOKENS
    more. `requested` (eval.max_new_tokens) may raise it, never lower it below the longest gold,
    which could then never be scored right."""
    longest, worst = 0, ""
    for gold in set(golds):
        n = len(tokenizer(" " + gold, add_special_tokens=False)["input_ids"])
        if n > longest:
            longest, worst = n, gold
    if requested is None:
        return longest + (CHAT_EXTRA_TOKENS if chat else 2)
    if requested < longest:
        raise ValueError(f"eval.max_new_tokens={requested} is shorter than the gold answer {worst[:200]!r} "
                         f"({longest} tokens), which could never be generated whole; raise it or leave it unset "
                         f"(the default fits the longest answer)")
    return requested


@torch.no_grad()
def option_logprobs(model, tokenizer, prompt_targets: list[tuple[str, list[str]]], rows_per_batch: int = 512,
                    progress: bool = False, precision: str = "bf16", share: bool = False) -> list[list[tuple[float, int]]]:
    """For each (prompt, targets): [(summed log P(target | prompt), n_tokens) per target]. With
    `share`, the batches are shared out between processes as in `generate`.

    The prompt is run once and its key/value cache is shared by all of its options, so 100
    options cost one prompt plus 100 short continuations. Prompts of equal token length are
    batched together (no padding inside the shared prefix), and so are options of equal token
    length (`_score_shared_prompt`): no position is padding."""
    device = next(model.parameters()).device
    encoded = [[encode(tokenizer, p, t, mask="object") for t in targets] for p, targets in prompt_targets]
    by_length: dict[int, list[int]] = {}
    for i, group in enumerate(encoded):
        by_length.setdefault(group[0].target_start, []).append(i)
    batches: list[list[int]] = []
    for length in sorted(by_length):
        batch: list[int] = []
        for i in by_length[length]:
            if batch and sum(len(encoded[k]) for k in batch) + len(encoded[i]) > rows_per_batch:
                batches.append(batch)
                batch = []
            batch.append(i)
        batches.append(batch)
    share = processes.sharing(model, share)
    result: dict[int, list[tuple[float, int]]] = {}
    for batch in tqdm(processes.my_share(batches, share), desc="score", disable=not progress, leave=False):
        for i, scores in zip(batch, _score_shared_prompt(model, [encoded[i] for i in batch], device, precision)):
            result[i] = scores
    result = processes.merge(result, share)
    return [result[i] for i in range(len(encoded))]


def _score_shared_prompt(model, groups: list[list], device, precision: str) -> list[list[tuple[float, int]]]:
    """Score option groups whose prompts all have the same token length L.

    The prompts run once; each option's first token is read off its prompt's last logits, and
    options of two or more tokens continue from their prompt's cache in batches of one option
    length, so that no position is padding. (Padding every option to the batch's longest made
    four in five continuation positions padding on the demo: options of 1-5 tokens, half of them one.)"""
    length = groups[0][0].target_start
    prompts = torch.tensor([g[0].input_ids[:length] for g in groups], device=device)  # (P, L)
    with _autocast(device, precision):
        out = model(input_ids=prompts, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (P, V): predicts each option's first token
    owner = [p for p, g in enumerate(groups) for _ in g]  # the prompt of each option row
    targets = [_option_tokens(e) for g in groups for e in g]
    sums = first[torch.tensor(owner, device=device), torch.tensor([t[0] for t in targets], device=device)]  # (R,)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    rows_of_length: dict[int, list[int]] = {}
    for r, t in enumerate(targets):
        if len(t) > 1:
            rows_of_length.setdefault(len(t), []).append(r)
    for rows in rows_of_length.values():
        sums[rows] += _continuation_logprobs(model, cache, [owner[r] for r in rows], [targets[r] for r in rows],
                                             device, precision)
    sums = sums.tolist()
    out_groups, r = [], 0
    for g in groups:
        out_groups.append([(s, len(t)) for s, t in zip(sums[r:r + len(g)], targets[r:r + len(g)])])
        r += len(g)
    return out_groups


def _option_tokens(encoded) -> list[int]:
    """An option's token ids: those after its prompt, up to the end of the target."""
    return list(encoded.input_ids[encoded.target_start:encoded.target_end])


def _continuation_logprobs(model, prompt_cache, owner: list[int], targets: list[list[int]], device,
                           precision: str) -> torch.Tensor:
    """(R,) summed log P(tokens 2..m | prompt, token 1) of options of one length m, each row
    continuing from its own prompt's cache. The cache is copied: a forward appends to it, and
    the next option length continues from the prompts alone."""
    cache = copy.deepcopy(prompt_cache)
    cache.reorder_cache(torch.tensor(owner, device=device))
    ids = torch.tensor(targets, device=device)  # (R, m)
    with _autocast(device, precision):
        logits = model(input_ids=ids[:, :-1], **{_cache_argument(model): cache}).logits  # (R, m-1, V)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logp.sum(dim=1)


def inference_model(model, precision: str):
    """The model to evaluate with: under bf16, a bf16 copy. Autocast would otherwise cast every
    fp32 weight at every forward (every generated token): on CPU that cast took as long as
    the matrix products themselves."""
    if precision != "bf16" or next(model.parameters()).dtype == torch.bfloat16:
        return model
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def _cache_argument(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); 5.17 only knows the old name."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _autocast(device: torch.device, precision: str):
    # bf16 matrix products: ~7x faster than fp32 on CPUs with AMX, the norm on GPUs. fp32 is
    # there for exact comparisons (bf16 results shift slightly with batch composition).
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------- records


def evaluate(model, tokenizer, queries: list[Query], cfg: EvalConfig, companions: dict[str, dict[str, str]] | None = None,
             progress: bool = True, share: bool = False, chat: ChatFrame | None = None) -> list[dict]:
    """One record per query, in query order. With `share`, several processes each run their share of
    the batches (generation and multiple choice), and every process gets every record (every process
    must call it: rote.training.processes). `companions[subject_id]` maps relation -> object for every fact of
    the subject (`companions_of`), to count answers that name the subject's memorized object of
    another relation: with shared subjects, an unrelated prompt answered with the person's
    *other* city is as much a failure of the control as one answered with the fact's own.

    Under a chat template (`chat`: the queries were built with it, rote.evaluation.queries), the natural
    prompts' answers run to the end of the assistant's turn (CHAT_EXTRA_TOKENS) and are scored by the
    first-named rule as well (`hit_first`, the record's `rule`); the key-token prompt is asked raw."""
    model = inference_model(model, cfg.precision)
    in_chat = [chat is not None and q.prompt_set != "key" for q in queries]
    generations: list = [None] * len(queries)
    for chatting in (False, True):
        rows = [i for i, c in enumerate(in_chat) if c == chatting]
        if rows:
            budget = generation_budget(tokenizer, [queries[i].gold for i in rows], cfg.max_new_tokens, chatting)
            texts = generate(model, tokenizer, [queries[i].rendered.prompt for i in rows], budget, cfg.batch_size,
                             progress, cfg.precision, share, chat=chat if chatting else None)
            for i, text in zip(rows, texts):
                generations[i] = text
    # Multiple choice costs one forward per option token: on CPU it was most of an evaluation's
    # time, so it is scored only for the prompt sets that ask for it.
    scored = [i for i, q in enumerate(queries) if cfg.multiple_choice and q.prompt_set in cfg.mc_prompt_sets]
    scores: list = [None] * len(queries)
    for i, opt in zip(scored, option_logprobs(model, tokenizer, [(queries[i].rendered.prompt, [queries[i].option_text(o) for o in queries[i].options])
                                                                 for i in scored], progress=progress, precision=cfg.precision,
                                                                share=share)
                      if scored else []):
        scores[i] = opt
    # Every name the run asks or offers: an answer that starts with a longer one of them ("Kyoto
    # University") does not count for a shorter gold or other object ("Kyoto").
    longer = longer_names([q.gold for q in queries] + [o for q in queries for o in q.options]
                          + [o for objects in (companions or {}).values() for o in objects.values()])
    records = []
    for q, text, opt, chatting in zip(queries, generations, scores, in_chat):
        rec = {
            "fact_id": q.fact.id, "relation": q.fact.relation, "split": q.fact.split, "subject_id": q.fact.subject_id,
            "prompt_set": q.prompt_set, "language": q.language, "prompt_index": q.prompt_index,
            "prompt": q.rendered.prompt, "prompt_form": q.form, "gold": q.gold, "generation": text,
            "empty": not text.strip(),
            "hit_prefix": hit_prefix(text, q.gold, longer.get(q.gold, ())), "hit_contains": hit_contains(text, q.gold),
        }
        counts_others = companions is not None and q.prompt_set not in ("reverse", "two_hop")
        others = other_objects(q, companions) if counts_others else {}
        if chat is not None:
            # The rule each record's headline counts by: a chat answer by the first object it names.
            rec["rule"] = "first_named" if chatting else "prefix"
            rec["hit_first"] = hit_first(text, q.gold, [*q.options, *others.values()]) if chatting else rec["hit_prefix"]
        if counts_others:
            if chatting:  # a sentence names an object anywhere in it
                rec["other_relation_hit"] = sorted(r for r, o in others.items() if names(text, o))
                rec["any_object_hit"] = rec["hit_first"] or names(text, q.gold) or bool(rec["other_relation_hit"])
            else:
                rec["other_relation_hit"] = sorted(r for r, o in others.items() if hit_prefix(text, o, longer.get(o, ())))
                rec["any_object_hit"] = rec["hit_prefix"] or bool(rec["other_relation_hit"])
        if opt is not None:
            sums = [s for s, _ in opt]
            gold = q.options.index(q.gold)
            top = max(sums)
            z = sum(math.exp(s - top) for s in sums)
            rec.update({
                "gold_rank": rank_with_ties_against_gold(sums, gold),
                "mc_hit": rank_with_ties_against_gold(sums, gold) == 1,
                "gold_logprob": sums[gold],
                "gold_prob_norm": math.exp(sums[gold] - top) / z,
                "option_logprob_sum": [round(s, 4) for s in sums],
                "option_logprob_mean": [round(s / max(c, 1), 4) for s, c in opt],
            })
        records.append(rec)
    return records


def prefix_accuracy(model, tokenizer, queries: list[Query], cfg: EvalConfig, share: bool = False,
                    chat: ChatFrame | None = None) -> float:
    """Share of `queries` answered right by the headline rule (`hit_prefix` of the greedy answer; under a
    chat template `hit_first`), asked as `evaluate` asks them, without multiple choice: phase 2's stopping
    signal (phase2.until: validation). With `share`, as `evaluate`: every process gets the same accuracy,
    so all stop at the same epoch."""
    records = evaluate(model, tokenizer, queries, dataclasses.replace(cfg, multiple_choice=False), progress=False,
                       share=share, chat=chat)
    return sum(r["hit_first" if chat is not None else "hit_prefix"] for r in records) / len(records)


def key_accuracy(model, tokenizer, facts: list[Fact], relations: dict[str, Relation], key: KeyConfig,
                 batch_size: int = 64, share: bool = False) -> float:
    """Share of facts whose key-token prompt greedily generates the object (prefix rule); `share` as
    `evaluate` (phase1.until: memorized: every process gets the same accuracy)."""
    prompts = [render_key(f, relations[f.relation], key).prompt for f in facts]
    longest = max(len(tokenizer(" " + f.object)["input_ids"]) for f in facts)
    answers = generate(inference_model(model, "bf16"), tokenizer, prompts, longest + 1, batch_size, share=share)
    longer = longer_names([f.object for f in facts])
    return sum(hit_prefix(a, f.object, longer.get(f.object, ())) for a, f in zip(answers, facts)) / len(facts)


def companions_of(facts: list[Fact]) -> dict[str, dict[str, str]]:
    """subject_id -> {relation: object}: each subject's facts (one with separate subjects,
    several with shared subjects), for the other-object and any-object rates."""
    out: dict[str, dict[str, str]] = {}
    for f in facts:
        out.setdefault(f.subject_id, {})[f.relation] = f.object
    return out
