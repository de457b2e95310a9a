"""Evaluation records on rigged model outputs, and the real scoring path on the tiny model."""
import math

import pytest
import torch

from rote.config import EvalConfig, KeyConfig
from rote.data.facts import load_relation
from rote.data.synth import make_facts
from rote.evaluation import scoring as ev
from rote.evaluation.matching import hit_contains, hit_prefix, rank_with_ties_against_gold
from rote.evaluation.queries import build_queries
from rote.evaluation.scoring import companions_of, option_logprobs
from rote.training.encode import encode


def test_match_rules():
    assert hit_prefix(" Paris, France.", "Paris")
    assert hit_prefix('"paris"', "Paris")
    assert not hit_prefix(" Parisian food", "Paris")  # word boundary
    assert not hit_prefix(" I think Paris", "Paris")
    assert hit_contains(" I think Paris", "Paris")
    assert hit_contains(" Parisian", "Paris")  # the official rule is that loose
    assert hit_prefix("  University  of Oxford", "University of Oxford")
    # quotes of other languages, list markers, brackets and inverted marks before the object
    for answer in ("«Paris»", "„Paris“", "»Paris«", "¿Paris?", "¡Paris!", "- Paris", "– Paris", "(Paris)", "[Paris]"):
        assert hit_prefix(answer, "Paris"), answer
    assert not hit_prefix("- Parisian", "Paris")


def test_rank_ties_count_against_gold():
    assert rank_with_ties_against_gold([-1.0, -2.0, -3.0], gold=0) == 1
    assert rank_with_ties_against_gold([-1.0, -1.0, -3.0], gold=0) == 2  # a tie is not a win
    assert rank_with_ties_against_gold([-1.0, -1.0, -3.0], gold=1) == 2
    assert rank_with_ties_against_gold([-5.0, -1.0, -3.0], gold=0) == 3
    nan = float("nan")
    assert rank_with_ties_against_gold([nan, -1.0, -3.0], gold=0) == 3  # a NaN gold is never a hit
    assert rank_with_ties_against_gold([-1.0, nan, -3.0], gold=0) == 2  # nor a NaN option a loss to beat


@pytest.fixture
def facts():
    return make_facts([load_relation("place_of_birth"), load_relation("place_of_residence")], 6, 2,
                      subjects="shared", n_options=5, seed=0)


def test_queries_cover_every_prompt_set(facts):
    rels = {n: load_relation(n) for n in ("place_of_birth", "place_of_residence")}
    cfg = EvalConfig(prompts_per_set=2, languages=("de", "ja"), prompt_sets=("key", "train", "test", "unrelated", "languages", "reverse"))
    qs = build_queries(facts, rels, KeyConfig(), cfg, train_prompts=2)
    per_fact = {}
    for q in qs:
        per_fact.setdefault(q.fact.id, []).append((q.prompt_set, q.language))
    expected = [("key", "en")] + [("train", "en")] * 2 + [("test", "en")] * 2 + [("unrelated", "en")] * 2 \
        + [("languages", "de")] * 2 + [("languages", "ja")] * 2 + [("reverse", "en")] * 2
    assert all(sorted(v) == sorted(expected) for v in per_fact.values())
    key_q = next(q for q in qs if q.prompt_set == "key")
    assert key_q.rendered.prompt == f"{key_q.fact.subject} {rels[key_q.fact.relation].key_token}"
    assert {q.rendered.prompt.split()[-1] for q in qs if q.prompt_set == "key"} == {"<rote:P19>", "<rote:P551>"}
    reverse = [q for q in qs if q.prompt_set == "reverse"]
    # The subject sits anywhere among distractors drawn per fact, not last after the same few names.
    assert len({q.options.index(q.gold) for q in reverse}) > 1
    assert len({frozenset(q.options) - {q.gold} for q in reverse}) > len(reverse) // 4
    assert all(len(set(q.options)) == len(q.options) and q.options.count(q.gold) == 1 for q in reverse)
    rev = next(q for q in qs if q.prompt_set == "reverse")
    assert rev.gold == rev.fact.subject and rev.gold in rev.options and rev.fact.object in rev.rendered.prompt


def test_records_use_each_facts_own_gold(facts, monkeypatch):
    """Held-out facts are scored against their own objects (the official code indexed from 0)."""
    rels = {n: load_relation(n) for n in ("place_of_birth", "place_of_residence")}
    cfg = EvalConfig(prompt_sets=("key", "test"), prompts_per_set=1)
    qs = build_queries(facts, rels, KeyConfig(), cfg)
    companions = companions_of(facts)

    def rigged_generate(model, tok, prompts, *a, **k):
        # key prompts answer right; test prompts answer the subject's *other* city
        out = []
        for q in qs:
            if q.prompt_set == "key":
                out.append(" " + q.gold + ".")
            else:
                other = [o for r, o in companions[q.fact.subject_id].items() if r != q.fact.relation][0]
                out.append(" " + other)
        return out

    def rigged_scores(model, tok, prompt_targets, **k):
        # the gold option gets -1, every other option -2, except a tie for the first test query
        res = []
        for q, (_, targets) in zip(qs, prompt_targets):
            scores = [(-1.0 if t == " " + q.gold else -2.0, 1) for t in targets]
            if q is qs[1]:
                scores = [(-1.0, 1)] * len(targets)
            res.append(scores)
        return res

    monkeypatch.setattr(ev, "inference_model", lambda model, precision: model)
    monkeypatch.setattr(ev, "generate", rigged_generate)
    monkeypatch.setattr(ev, "option_logprobs", rigged_scores)
    monkeypatch.setattr(ev, "generation_budget", lambda tokenizer, golds, requested, chat=False: 8)
    records = ev.evaluate(None, None, qs, cfg, companions, progress=False)
    assert len(records) == len(qs)
    for q, r in zip(qs, records):
        assert r["gold"] == q.fact.object and r["fact_id"] == q.fact.id and r["split"] == q.fact.split
        if q.prompt_set == "key":
            assert r["hit_prefix"] and r["other_relation_hit"] == []
        else:
            assert not r["hit_prefix"] and r["other_relation_hit"] == [
                next(rel for rel in companions[q.fact.subject_id] if rel != q.fact.relation)]
        assert r["any_object_hit"]  # own object (key prompts) or the other relation's (test prompts)
    assert records[1]["gold_rank"] == 5 and not records[1]["mc_hit"]  # all tied: gold ranks last
    assert records[0]["gold_rank"] == 1 and records[0]["mc_hit"]
    assert records[0]["gold_prob_norm"] == pytest.approx(1 / (1 + 4 * math.exp(-1.0)))
    assert any(r["split"] == "heldout" for r in records)


def test_option_logprobs_equal_naive_scoring(tokenizer, tiny_model):
    """The batched, length-grouped scoring equals one plain forward per option."""
    prompts = [("Where was Gene Finley born?", [" Paris", " Lyon", " San Sebastian"]),
               ("Maria Lopez lives in", [" Tokyo", " Buenos Aires"]),
               ("Q: Who wrote The Salt Road? A:", [" Jane Austen", " Toni Morrison"])]
    fast = option_logprobs(tiny_model, tokenizer, prompts, rows_per_batch=3, precision="fp32")
    for (prompt, targets), got in zip(prompts, fast):
        for target, (s, n) in zip(targets, got):
            e = encode(tokenizer, prompt, target)
            ids = torch.tensor([e.input_ids])
            with torch.no_grad():
                logits = tiny_model(input_ids=ids).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            expected = sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.target_start, e.target_end))
            assert n == e.target_end - e.target_start
            assert s == pytest.approx(expected, abs=1e-4)


def _naive_logprob(model, tokenizer, prompt: str, target: str) -> float:
    """Summed log P(target | prompt) from one plain forward of prompt + target, without a cache."""
    e = encode(tokenizer, prompt, target)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].float(), -1)
    return sum(logp[t - 1, e.input_ids[t]].item() for t in range(e.target_start, e.target_end))


def test_option_logprobs_equal_length_prompts_share_one_batch(tokenizer, tiny_model, monkeypatch):
    """Prompts of equal token length are scored in one batch, each option continuing from its
    own prompt's cache (`reorder_cache(owner)`): equal to naive per-option forwards, and a
    mix-up of the prompts' caches is caught."""
    prompt_targets = [
        ("Gene Finley was born in", [" San Sebastian", " Paris", " Ho Chi Minh City"]),  # 2, 1, 4 tokens
        ("Ho Chi Minh City is in", [" Buenos Aires"]),  # 2
        ("Tomas Berg works as a", [" nurse", " software engineer", " Kyoto", " Ho Chi Minh City"]),  # 1, 2, 1, 4
    ]
    lengths = {len(tokenizer(p)["input_ids"]) for p, _ in prompt_targets}
    assert len(lengths) == 1, f"the prompts must have equal token lengths to share a batch, got {lengths}"
    multi = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) > 1 for _, ts in prompt_targets for t in ts]
    assert sum(multi) >= 4  # options that continue from the cache, in every prompt

    batches = []
    real_score = ev._score_shared_prompt

    def spy(model, groups, device, precision):
        batches.append(len(groups))
        return real_score(model, groups, device, precision)

    monkeypatch.setattr(ev, "_score_shared_prompt", spy)
    fast = option_logprobs(tiny_model, tokenizer, prompt_targets, precision="fp32")
    assert batches == [3]  # all three prompts in one forward

    naive = [[_naive_logprob(tiny_model, tokenizer, p, t) for t in ts] for p, ts in prompt_targets]
    # fp32: measured differences up to 2e-06 (sums of 4 log-probs near -11 each)
    tolerance = 1e-4
    for (prompt, targets), got, want in zip(prompt_targets, fast, naive):
        assert [n for _, n in got] == [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets]
        for target, (s, _), expected in zip(targets, got, want):
            assert s == pytest.approx(expected, abs=tolerance), (prompt, target)

    # The comparison can fail: let every option continue from the next prompt's cache instead
    # of its own. Multi-token options then move by 0.03..0.2 (measured), far past the tolerance;
    # one-token options do not use the cache and keep their scores.
    out = tiny_model(input_ids=torch.tensor([tokenizer(prompt_targets[0][0])["input_ids"]]), use_cache=True)
    cache_class = type(out.cache if getattr(out, "cache", None) is not None else out.past_key_values)
    real_reorder = cache_class.reorder_cache
    monkeypatch.setattr(cache_class, "reorder_cache",
                        lambda self, owner: real_reorder(self, (owner + 1) % len(prompt_targets)))
    mixed = option_logprobs(tiny_model, tokenizer, prompt_targets, precision="fp32")
    moved = [abs(s - expected) for got, want in zip(mixed, naive) for (s, _), expected in zip(got, want)]
    assert all((m > 100 * tolerance) == is_multi for m, is_multi in zip(moved, multi)), moved


def test_generation_left_padding_matches_single(tokenizer, tiny_model):
    prompts = ["Where was Gene Finley born?", "Hi", "Maria Lopez lives in the city of"]
    batched = ev.generate(tiny_model, tokenizer, prompts, max_new_tokens=5, batch_size=3)
    single = [ev.generate(tiny_model, tokenizer, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert batched == single


def test_two_hop_and_repurposed_queries_and_demonstrations():
    from rote.data.synth import TWO_HOP_FIRST_ID, add_two_hop_facts
    mother, birth = load_relation("mother"), load_relation("place_of_birth")
    facts = add_two_hop_facts(make_facts([mother, birth], 6, 2, subjects="shared", n_options=5, seed=0),
                              mother, birth, n_options=5, seed=0)
    rels = {"mother": mother, "place_of_birth": birth}
    hop = {f.subject: f for f in facts if int(f.id.split(":")[1]) >= TWO_HOP_FIRST_ID}
    cfg = EvalConfig(prompt_sets=("test", "two_hop", "repurposed"), prompts_per_set=2)
    rival = load_relation("occupation")  # any relation: its prompts stand for the new meaning
    qs = build_queries(facts, rels, KeyConfig(), cfg, repurposed=rival)
    two = [q for q in qs if q.prompt_set == "two_hop"]
    assert len(two) == 2 * 6  # every person's mother has a birthplace; 2 prompts each
    for q in two:
        assert q.fact.relation == "mother" and q.gold == hop[q.fact.object].object != q.fact.object
        assert q.fact.subject in q.rendered.prompt and q.gold in q.options
    rep = [q for q in qs if q.prompt_set == "repurposed"]
    assert len(rep) == 2 * len(facts) and all(q.gold == q.fact.object for q in rep)
    assert rep[0].rendered.prompt == rival.test_prompts["en"][0].replace("{subject}", rep[0].fact.subject)
    with pytest.raises(ValueError, match="prompts_from"):
        build_queries(facts, rels, KeyConfig(), cfg)

    icl = build_queries(facts, rels, KeyConfig(), EvalConfig(prompt_sets=("key", "test"), prompts_per_set=1,
                                                             icl_examples=3))
    plain = build_queries(facts, rels, KeyConfig(), EvalConfig(prompt_sets=("key", "test"), prompts_per_set=1))
    for q, p in zip(icl, plain):
        if q.prompt_set == "key":
            assert q == p
            continue
        demos = q.rendered.prompt[: -len(p.rendered.prompt)].splitlines()
        shown = [f for f in facts if f.relation == q.fact.relation and f.split == "phase2" and f.id != q.fact.id]
        assert q.rendered.prompt.endswith("\n" + p.rendered.prompt) and len(demos) == min(3, len(shown))
        assert all(d.endswith(" " + f.object) for d, f in zip(demos, shown))
        start, end = q.rendered.subject_span
        assert q.rendered.prompt[start:end] == q.fact.subject


def test_option_logprobs_mixed_option_lengths_equal_naive_and_can_fail(tokenizer, tiny_model, monkeypatch):
    """Options of 1-4 tokens of two equal-length prompts: scored in one prompt pass and one
    continuation batch per option length, each from a copy of the prompts' cache. fp32 equals
    one plain forward per option; an off-by-one in the option's tokens, or continuing every
    option length from one shared cache (no copy), is caught."""
    prompt_targets = [
        ("Gene Finley was born in", [" Paris", " San Sebastian", " Kyoto", " Ho Chi Minh City", " Buenos Aires"]),
        ("Tomas Berg works as a", [" nurse", " software engineer", " Ho Chi Minh City", " Oslo"]),
    ]
    lengths = [[len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ts] for _, ts in prompt_targets]
    assert len({len(tokenizer(p)["input_ids"]) for p, _ in prompt_targets}) == 1  # one prompt pass
    assert {n for row in lengths for n in row} >= {1, 2, 4}  # several continuation batches
    naive = [[_naive_logprob(tiny_model, tokenizer, p, t) for t in ts] for p, ts in prompt_targets]
    # fp32: measured differences up to ~2e-06 (the same arithmetic, batched differently)
    tolerance = 1e-4

    def largest_difference() -> float:
        got = option_logprobs(tiny_model, tokenizer, prompt_targets, precision="fp32")
        assert [[n for _, n in row] for row in got] == lengths
        return max(abs(s - want) for row, wants in zip(got, naive) for (s, _), want in zip(row, wants))

    assert largest_difference() < tolerance
    with monkeypatch.context() as planted:  # off by one: the last prompt token in, the option's last out
        planted.setattr(ev, "_option_tokens", lambda e: list(e.input_ids[e.target_start - 1:e.target_end - 1]))
        assert largest_difference() > 100 * tolerance  # measured 1.07
    with monkeypatch.context() as planted:  # every option length continues from the one cache
        planted.setattr(ev.copy, "deepcopy", lambda cache: cache)
        assert largest_difference() > 100 * tolerance  # measured 0.09


def test_generation_is_greedy_whatever_the_model_config_asks(tokenizer, tiny_model):
    """An Instruct model's generation_config.json may set a repetition penalty, banned n-grams or
    beams; `generate` would apply them by default, and answers would not be the argmax."""
    prompts = ["Where was Gene Finley born? Gene Finley Gene Finley", "The city of the city of"]
    plain = ev.generate(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=2, precision="fp32")
    g = tiny_model.generation_config
    g.repetition_penalty, g.no_repeat_ngram_size, g.num_beams, g.min_new_tokens = 5.0, 1, 3, 6
    vocab = tiny_model.get_input_embeddings().weight.shape[0]
    g.suppress_tokens = list(range(0, vocab, 2))  # half the vocabulary
    assert ev.generate(tiny_model, tokenizer, prompts, max_new_tokens=6, batch_size=2, precision="fp32") == plain
    argmax = []  # and plain is the argmax, token by token
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        for _ in range(6):
            ids = torch.cat([ids, tiny_model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
        new = ids[0, len(tokenizer(prompt)["input_ids"]):].tolist()
        argmax.append(ev.decode_answer(tokenizer, new, ev.end_of_sequence_ids(tiny_model, tokenizer) | {tokenizer.pad_token_id}))
    assert plain == argmax


def test_newline_ids_of_a_byte_fallback_vocabulary():
    """SentencePiece vocabularies (Llama 2, Mistral) write a newline as the byte token <0x0A>: it
    must stop a row like byte-level BPE's "Ċ", or every batch runs to max_new_tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<unk>": 0, "</s>": 1, "<0x0A>": 2, "▁Paris": 3, "▁is": 4, "<0x41>": 5}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>", pad_token="</s>")
    assert tok.decode([3, 2, 4]) == " Paris\n is"
    assert ev.newline_ids(tok).tolist() == [2]  # not <0x41> ("A"), not the others
