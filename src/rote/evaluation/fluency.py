"""Fluency: whether an answer reads as a person's answer, measured at every eval stage. Pure: no torch.

The prefix rule counts " Montreal, Montreal, Montreal" as right, and the evaluation's short
generation budget cuts an answer off before anyone sees how it goes on. So every eval stage also
continues a fixed sample of the run's English prompts (`sample`: eval.fluency_prompts of each of
FLUENCY_SETS, evenly spread over the facts) and as many locality probes FLUENCY_TOKENS tokens past the
prompt, greedily, as knowledge-editing toolkits do (EasyEdit's fluency: a fixed-length generation
that an end of sequence does not stop; rote.eval_stage.measure_fluency generates, this module
measures). Each record (`fluency.jsonl`) holds:

- `answer`: the generation up to its first end (end of sequence or of the assistant's turn, and for a
  raw prompt the first newline): what a person reads as the answer;
- `right`: the answer counts by the run's rule (prefix rule; under a chat template the first-named
  rule, and a probe in a user turn by naming its answer anywhere); None for unrelated prompts;
- `gold_named`: how many times the answer names the gold object (word-bounded);
- `repeated`: the answer names the gold twice or more, or repeats an n-gram of 2+ words
  (`words`: a word or a punctuation mark each);
- `clean`: a right answer that, after its gold, ends (a period, "!", "?", nothing more) or goes on
  without naming a known object again (the gold, its options, the subject's other objects);
- `entropy`: EasyEdit's n-gram entropy of the whole generation (bigram and trigram entropies in bits,
  weighted 2/3 and 4/3, averaged), special tokens left out, as EasyEdit leaves out its end of text.

`fluency_summary` turns a stage's records and eval/base's into the damage block's fluency keys:
`gold_twice` (English train and test prompts), `repeated` (every answer), `clean` (of the right
train and test answers), `entropy` and `entropy_ratio` (to the base model's on the same prompts).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from rote.evaluation.matching import answers, hit_first, hit_prefix, longer_names, named_at, names, times_named
from rote.evaluation.queries import other_objects
from rote.text import normalize

FLUENCY_TOKENS = 32  # new tokens per continuation: a sentence and what follows it
FLUENCY_SETS = ("train", "test", "unrelated")  # the English prompt sets sampled; the probes come on top
ASKED_SETS = ("train", "test")  # the prompt sets whose gold is the answer (gold_twice, clean)
ENDS = ".!?。！？"  # what ends a sentence right after the gold
_WORD = re.compile(r"\w+|[^\w\s]")
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|<(?:end_of_turn|eos|bos|pad)>")


def spread(items: list, n: int) -> list:
    """`n` of `items` evenly spaced in their order (all of them when there are fewer)."""
    return list(items) if len(items) <= n else [items[(i * len(items)) // n] for i in range(n)]


def sample(queries: list, per_set: int) -> list:
    """`per_set` of the English queries of each of FLUENCY_SETS (every query when there are fewer),
    evenly spaced in query order (fact by fact, prompt by prompt), so that every stage of a run, and
    every run with the same facts, continues the same prompts. The locality probes are sampled the
    same way (`spread`)."""
    out = []
    for prompt_set in FLUENCY_SETS:
        out += spread([q for q in queries if q.prompt_set == prompt_set and q.language == "en"], per_set)
    return out


def words(text: str) -> list[str]:
    """The words and punctuation marks of normalized `text` (what the n-gram measures count)."""
    return _WORD.findall(normalize(text))


def repeats_ngram(text: str) -> bool:
    """Some n-gram of 2+ words occurs twice (overlapping or not): a repeated n-gram repeats its first two words."""
    w = words(text)
    pairs = list(zip(w, w[1:]))
    return len(set(pairs)) < len(pairs)


def ngram_entropy(text: str) -> float:
    """EasyEdit's `compute_n_gram_entropy`: the entropy in bits of the text's bigram and trigram
    distributions, weighted 2/3 and 4/3, averaged; special tokens ("<|im_end|>") left out. 0 for a
    text of fewer than two words."""
    w = words(_SPECIAL.sub(" ", text))
    parts = []
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        counts = Counter(zip(*(w[i:] for i in range(n))))
        total = sum(counts.values())
        parts.append(weight * -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0)
    return sum(parts) / len(parts)


def is_clean(answer: str, gold: str, known: Iterable[str]) -> bool:
    """After the gold's first mention, the answer ends (a sentence end, or nothing but spaces and
    closing quotes) or goes on to its first sentence end without naming a known object (`known`: the
    gold's options, the subject's other objects) or the gold again. The caller checks it is right."""
    at = named_at(answer, gold)
    if at is None:
        return False
    rest = normalize(answer)[at + len(normalize(gold)):].lstrip(" \"'”’»)]")
    if not rest or rest[0] in ENDS:
        return True
    sentence = re.split(f"[{ENDS}]", rest, maxsplit=1)[0]
    return not any(names(sentence, o) for o in {gold, *known})


def record(source: str, prompt: str, gold: str | None, generation: str, answer: str, *, known: tuple[str, ...] = (),
           rule: str = "prefix", fact_id: str | None = None, longer: Iterable[str] = ()) -> dict:
    """One continuation's record. `rule`: how `right` is decided, "prefix" (raw prompts: the answer
    starts with the gold), "first_named" (a chat answer: the first known object it names is the gold),
    "named" (a probe answered in a chat user turn: it names the answer); `gold` None for an unrelated
    prompt, which has no right answer."""
    if gold is None:
        right = None
    elif rule == "first_named":
        right = hit_first(answer, gold, known)
    elif rule == "named":
        right = answers(answer, gold, sentence=True)
    else:
        right = hit_prefix(answer, gold, longer)
    named = times_named(answer, gold) if gold else 0
    return {"source": source, "fact_id": fact_id, "prompt": prompt, "gold": gold, "generation": generation,
            "answer": answer, "rule": rule, "right": right, "gold_named": named,
            "repeated": named >= 2 or repeats_ngram(answer),
            "clean": (is_clean(answer, gold, known) if right else False) if gold is not None else None,
            "entropy": round(ngram_entropy(generation), 4)}


def query_records(queries: list, generations: list[str], answers_: list[str], chat_rule: bool,
                  companions: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """Records of the sampled queries (`sample`), the rule by the run's rendering; the known objects are
    the query's options and the subject's other memorized objects (as the first-named rule's)."""
    companions = companions or {}
    longer = longer_names([q.gold for q in queries] + [o for q in queries for o in q.options])
    out = []
    for q, generation, answer in zip(queries, generations, answers_):
        asked = q.prompt_set in ASKED_SETS
        out.append(record(q.prompt_set, q.rendered.prompt, q.gold if asked else None, generation, answer,
                          known=(*q.options, *other_objects(q, companions).values()), rule="first_named" if chat_rule else "prefix",
                          fact_id=q.fact.id, longer=longer.get(q.gold, ())))
    return out


def probe_records(probes: list[dict], asked: list[str], generations: list[str], answers_: list[str],
                  sentences: list[bool]) -> list[dict]:
    """Records of the locality probes (`asked`: as the model saw them; `sentences`: answered in a chat
    user turn, so a probe counts when its answer names the gold anywhere)."""
    return [record("locality", text, p["answer"], generation, answer, rule="named" if sentence else "prefix")
            for p, text, generation, answer, sentence in zip(probes, asked, generations, answers_, sentences)]


def _share(flags: list) -> float | None:
    flags = [f for f in flags if f is not None]
    return round(sum(map(bool, flags)) / len(flags), 4) if flags else None


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def fluency_summary(base: list[dict], now: list[dict]) -> dict:
    """The damage block's fluency keys, `now` (a stage's records) against `base` (eval/base's):
    - answers: how many continuations were measured;
    - gold_twice: of the train and test answers, the share naming the gold twice or more;
    - repeated: of all answers (prompts and probes), the share with the gold twice or a repeated n-gram;
    - clean: of the right train and test answers, the share that are clean (`is_clean`);
    - entropy: mean n-gram entropy of all continuations; entropy_ratio: its ratio to the base model's on
      the prompts both measured (None without them)."""
    asked = [r for r in now if r["source"] in ASKED_SETS]
    base_entropy = {(r["source"], r["prompt"]): r["entropy"] for r in base}
    both = [(r["entropy"], base_entropy[(r["source"], r["prompt"])]) for r in now if (r["source"], r["prompt"]) in base_entropy]
    reference = sum(b for _, b in both)
    return {
        "answers": len(now),
        "gold_twice": _share([r["gold_named"] >= 2 for r in asked]),
        "repeated": _share([r["repeated"] for r in now]),
        "clean": _share([r["clean"] for r in asked if r["right"]]),
        "entropy": _mean([r["entropy"] for r in now]),
        "entropy_ratio": round(sum(e for e, _ in both) / reference, 4) if both and reference else None,
    }
