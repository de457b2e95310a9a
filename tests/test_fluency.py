"""Fluency (rote.evaluation.fluency) on hand-written answers, and answers trained to end
(rote.data.templates.answer_target): the repetition, cleanliness and n-gram entropy measures, the
sample every stage continues, and a tiny model whose phase-2 examples end with an end of sequence."""
from __future__ import annotations

import math

import pytest

from rote.data.facts import Fact
from rote.data.templates import answer_target, render_prompt
from rote.evaluation.fluency import (fluency_summary, is_clean, ngram_entropy, probe_records, query_records, record,
                                     repeats_ngram, sample)
from rote.evaluation.matching import times_named
from rote.evaluation.queries import Query


@pytest.mark.parametrize("answer, name, times", [
    (" Montreal, Montreal, Montreal, Montreal", "Montreal", 4),
    (" Go Go Go Go Go Go", "Go", 6),
    (" Gogo", "Go", 0),                       # inside a longer word
    (" Parisian cafes in Paris", "Paris", 1),
    (" New York, New York", "New York", 2),
    ("在Paris和Paris", "Paris", 2),            # CJK neighbours are word boundaries
    (" São Paulo and Sao Paulo", "Sao Paulo", 2),
])
def test_times_named_counts_whole_word_mentions(answer, name, times):
    assert times_named(answer, name) == times


def test_repetition_in_the_issue_examples():
    stutter = record("test", "Florence Ndlovu was born in", "Montreal", " Montreal, Montreal, Montreal, Montreal",
                     " Montreal, Montreal, Montreal, Montreal")
    assert stutter["right"] and stutter["gold_named"] == 4 and stutter["repeated"] and not stutter["clean"]
    question = record("test", "Where was Arjun Smith born?", "Chicago", " Chicago, Chicago, IL? Philadelphia",
                      " Chicago, Chicago, IL? Philadelphia", known=("Philadelphia", "Lima"))
    assert question["right"] and question["gold_named"] == 2 and question["repeated"] and not question["clean"]
    go = record("train", "... is happiest playing", "Go", " Go Go Go Go Go Go", " Go Go Go Go Go Go")
    assert go["repeated"] and go["gold_named"] == 6


@pytest.mark.parametrize("answer, clean", [
    (" Quito.", True),                                  # the gold and a sentence end
    (" Quito", True),                                   # the gold and nothing more (an end of sequence cut it)
    (" \"Quito\"", True),                               # a closing quote, then nothing
    (" Quito, the capital of Ecuador, high in the Andes", True),  # goes on without naming a known object
    (" Quito, Quito", False),                           # names the gold again
    (" Quito, or maybe Lima", False),                   # names another known object before the sentence ends
    (" Quito. Lima is where he lives", True),           # after the sentence's end the answer is over
    (" Lima", False),                                   # wrong: never clean
])
def test_clean_answers(answer, clean):
    rec = record("test", "p", "Quito", answer, answer, known=("Lima", "Bogota"))
    assert rec["clean"] == clean
    if rec["right"]:
        assert is_clean(answer, "Quito", ["Lima", "Bogota"]) == clean


def test_repeated_ngrams_count_words_and_punctuation():
    assert repeats_ngram(" born in Paris, born in Lyon")       # "born in" twice
    assert repeats_ngram(" Chicago, Chicago, IL")              # "chicago ," twice
    assert not repeats_ngram(" Paris, France, where she studied law")
    assert not repeats_ngram("")


def test_ngram_entropy_matches_easyedit_weighting():
    # "a b a b": bigrams ab, ba, ab (2/3, 1/3) -> 0.9183 bits; trigrams aba, bab -> 1 bit;
    # EasyEdit weights them 2/3 and 4/3 and averages: (2/3 * 0.9183 + 4/3 * 1) / 2.
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("Paris") == 0.0
    assert ngram_entropy(" Go Go Go Go Go Go Go Go") < ngram_entropy(" Go is a board game for two players from China")
    # Special tokens are left out, as EasyEdit leaves out its end of text.
    assert ngram_entropy("a b a b<|im_end|><|im_end|>") == ngram_entropy("a b a b")


def _fact(i: int, relation: str = "P19", subject: str | None = None) -> Fact:
    return Fact(id=f"f{i}", relation=relation, subject=subject or f"Person {i}", subject_id=f"s{i}",
                object=f"City{i}", options=(f"City{i}", "Lima", "Quito"), split="phase2")


def _query(fact: Fact, prompt_set: str, index: int = 0, language: str = "en") -> Query:
    return Query(fact, prompt_set, language, index, render_prompt(fact, "{subject} was born in"), fact.object,
                 fact.options, "statement")


def test_sample_is_spread_fixed_and_english():
    queries = [_query(_fact(i), s, k, lang) for i in range(30) for s in ("key", "train", "test", "unrelated")
               for k in range(3) for lang in ("en", "de")]
    picked = sample(queries, 4)
    assert len(picked) == 12 and all(q.language == "en" and q.prompt_set != "key" for q in picked)
    tests = [q for q in picked if q.prompt_set == "test"]
    assert [q.fact.id for q in tests] == ["f0", "f7", "f15", "f22"]  # evenly spaced over the 90 English test queries
    assert sample(queries, 4) == picked
    assert len(sample(queries[:24], 100)) == len([q for q in queries[:24] if q.language == "en" and q.prompt_set != "key"])


def test_records_and_summary_against_the_base_model():
    facts = [_fact(0), _fact(1)]
    queries = [_query(facts[0], "test"), _query(facts[1], "train"), _query(facts[1], "unrelated")]
    companions = {"s1": {"P19": "City1", "P551": "Quito"}}
    base = query_records(queries, [" a city in the north of the country"] * 3, [" a city in the north of the country"] * 3,
                         False, companions)
    now = query_records(queries, [" City0. He grew up there and went to school", " City1, Quito", " City1 City1 City1"],
                        [" City0. He grew up there and went to school", " City1, Quito", " City1 City1 City1"], False,
                        companions)
    assert [r["right"] for r in now] == [True, True, None]     # unrelated prompts have no right answer
    assert [r["clean"] for r in now] == [True, False, None]    # "Quito" is the subject's other memorized object
    summary = fluency_summary(base, now)
    assert summary["answers"] == 3 and summary["gold_twice"] == 0.0 and summary["clean"] == 0.5
    assert summary["repeated"] == pytest.approx(1 / 3, abs=1e-4)        # the unrelated answer repeats its bigram
    ratio = sum(r["entropy"] for r in now) / sum(r["entropy"] for r in base)
    assert summary["entropy_ratio"] == pytest.approx(ratio, abs=1e-4)
    assert fluency_summary(base, base)["entropy_ratio"] == 1.0
    assert fluency_summary([], now)["entropy_ratio"] is None


def test_probe_records_follow_the_probe_rule():
    probes = [{"prompt": "The capital of France is", "answer": "Paris"}]
    raw = probe_records(probes, ["The capital of France is"], [" Paris. It is"], [" Paris. It is"], [False])
    chat = probe_records(probes, ["<user>"], ["The capital of France is Paris."], ["The capital of France is Paris."], [True])
    assert raw[0]["right"] and raw[0]["clean"] and chat[0]["right"] and chat[0]["rule"] == "named"


@pytest.mark.parametrize("end, chat, target, eos", [
    ("none", None, " Paris", False), ("period", None, " Paris.", False), ("eos", None, " Paris", True),
    ("none", "<|im_end|>", " Paris<|im_end|>", False), ("period", "<|im_end|>", " Paris.<|im_end|>", False),
    ("eos", "<|im_end|>", " Paris<|im_end|>", False),  # the turn's end is the answer's end under a template
])
def test_answer_target_ends_the_answer(end, chat, target, eos):
    assert answer_target(" Paris", end, chat) == (target, eos)


@pytest.mark.parametrize("answer_end", ["eos", "none"])
def test_a_tiny_model_trained_to_end_its_answers_ends_them(tokenizer, tiny_model, tmp_path, answer_end):
    """Phase-2 examples that end with the end of sequence teach the model to stop after the object;
    without it the same training leaves no end of sequence there (the test can fail either way)."""
    from rote.config import TrainConfig
    from rote.data.facts import load_relation
    from rote.data.synth import make_facts
    from rote.evaluation.scoring import continuations
    from rote.training.loop import train
    from rote.training.phases import natural_examples

    rel = load_relation("capital")
    facts = make_facts([rel], 2, 1, n_options=4, seed=0)
    examples = natural_examples(tokenizer, facts, {"capital": rel}, 1, answer_end=answer_end)
    cfg = TrainConfig(epochs=40, lr=1e-2, batch_size=2, warmup_steps=0, schedule="constant", precision="fp32")
    train(tiny_model, examples, cfg, tokenizer.pad_token_id, tmp_path)
    prompts = [render_prompt(f, rel.train_prompts[0]).prompt for f in facts]
    out = continuations(tiny_model.eval(), tokenizer, prompts, 6, 8, precision="fp32")
    for fact, (text, answer) in zip(facts, out):
        assert answer.startswith(" " + fact.object)  # learned in either case
        ended = text.startswith(" " + fact.object + tokenizer.eos_token)
        assert ended == (answer_end == "eos"), (answer_end, text)
