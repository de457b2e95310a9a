"""What a reported number counts: the match rule on Chinese and Japanese answers, key tokens left
visible in answers, generation long enough for every gold answer, the unrelated-prompt control
counting every memorized object of the subject, and results by prompt form."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rote.config import EvalConfig, KeyConfig
from rote.data.facts import Fact, load_relation
from rote.data.templates import prompt_form
from rote.evaluation import scoring as ev
from rote.evaluation.matching import hit_prefix, longer_names, normalize
from rote.evaluation.metrics import aggregate, pick
from rote.evaluation.queries import build_queries
from rote.evaluation.scoring import generation_budget

# ---------------------------------------------------------------- the prefix rule


@pytest.mark.parametrize("answer", ["Paris是法国城市", "Parisの出身", "、Paris", " Paris。", "Paris, France"])
def test_prefix_rule_accepts_answers_followed_by_chinese_or_japanese(answer):
    assert hit_prefix(answer, "Paris")


@pytest.mark.parametrize("answer", ["Parisian", "パリ", " I think Paris", ""])
def test_prefix_rule_still_rejects(answer):
    assert not hit_prefix(answer, "Paris")


@pytest.mark.parametrize("answer, gold", [("Bogota", "Bogotá"), (" SÃO PAULO", "São Paulo"), ("Zurich.", "Zürich"),
                                          ("Strasse 5", "Straße"), ("İstanbul", "Istanbul")])
def test_prefix_rule_ignores_case_and_latin_accents(answer, gold):
    assert hit_prefix(answer, gold)


def test_accents_of_other_scripts_still_count():
    """Japanese voiced kana are a letter plus a mark: dropping the mark would make が equal か."""
    assert normalize("が") != normalize("か")
    assert not hit_prefix("がっこう", "かっこう")


def test_an_answer_naming_a_longer_name_does_not_count_for_the_shorter():
    longer = longer_names(["Kyoto", "Kyoto University", "Boston", "Boston College", "Bostonia", "Osaka"])
    assert longer == {"Kyoto": ("Kyoto University",), "Boston": ("Boston College",)}
    assert not hit_prefix(" Kyoto University.", "Kyoto", longer["Kyoto"])
    assert hit_prefix(" Kyoto, Japan", "Kyoto", longer["Kyoto"])
    assert hit_prefix(" Kyoto University", "Kyoto University", longer.get("Kyoto University", ()))
    assert hit_prefix(" Kyoto University.", "Kyoto")  # without the run's names, the plain rule


def test_records_credit_the_longest_name_the_run_knows(monkeypatch):
    """With shared subjects a person born in Kyoto who studied at Kyoto University: the answer
    "Kyoto University" to the birthplace question names the other fact's object, not this one's."""
    rels = {n: load_relation(n) for n in ("place_of_birth", "educated_at")}
    born = Fact("place_of_birth:0", "Gene Finley", "subject:0000", "place_of_birth", "Kyoto", ("Kyoto", "Rome"), "heldout")
    studied = Fact("educated_at:0", "Gene Finley", "subject:0000", "educated_at", "Kyoto University",
                   ("Kyoto University", "Ghent University"), "heldout")
    qs = build_queries([born, studied], rels, KeyConfig(), EvalConfig(prompt_sets=("key",), multiple_choice=False))
    monkeypatch.setattr(ev, "inference_model", lambda model, precision: model)
    monkeypatch.setattr(ev, "generate", lambda *a, **k: [" Kyoto University"] * len(qs))
    monkeypatch.setattr(ev, "generation_budget", lambda tokenizer, golds, requested, chat=False: 8)
    cfg = EvalConfig(prompt_sets=("key",), multiple_choice=False)
    records = ev.evaluate(None, None, qs, cfg, ev.companions_of([born, studied]), progress=False)
    by_relation = {r["relation"]: r for r in records}
    assert not by_relation["place_of_birth"]["hit_prefix"] and by_relation["place_of_birth"]["other_relation_hit"] == ["educated_at"]
    assert by_relation["educated_at"]["hit_prefix"] and by_relation["educated_at"]["other_relation_hit"] == []


# ---------------------------------------------------------------- prompt forms


@pytest.mark.parametrize("template, form", [
    ("{subject} was born in", "statement"),
    ("Where was {subject} born?", "question"),
    ("Q: In which city was {subject} born? A:", "qa"),
    ("{subject}出生在哪座城市？", "question"),
    ("問：{subject}はどこで生まれましたか？答え：", "qa"),
    ("Frage: Wo wurde {subject} geboren? Antwort:", "qa"),
    ("{subject}の出身地は", "statement"),
])
def test_prompt_form(template, form):
    assert prompt_form(template) == form


def test_every_shipped_test_prompt_has_the_same_form_in_every_language():
    """The translations are of the English prompt at the same index, so the form must agree."""
    from rote.data.facts import builtin_relation_names
    for name in builtin_relation_names():
        rel = load_relation(name)
        for lang, prompts in rel.test_prompts.items():
            assert [prompt_form(p) for p in prompts] == [prompt_form(p) for p in rel.test_prompts["en"]], (name, lang)


def _records(outcomes):
    """Hand-made records: (prompt_set, form, own, other, empty)."""
    return [{"split": "heldout", "prompt_set": ps, "language": "en", "relation": "r", "prompt_form": form,
             "hit_prefix": own, "hit_contains": own, "other_relation_hit": ["q"] if other else [],
             "any_object_hit": own or other, "empty": empty} for ps, form, own, other, empty in outcomes]


def test_unrelated_control_counts_every_memorized_object():
    rows = aggregate(_records([
        ("unrelated", "statement", True, False, False),   # the fact's own city
        ("unrelated", "statement", False, True, False),   # the person's other city: a failure too
        ("unrelated", "question", False, False, True),    # nothing
        ("unrelated", "question", False, False, False),   # something else
    ]))
    row = pick(rows, split="heldout", prompt_set="unrelated", language="en", relation="all")
    assert (row["prefix"], row["other_object"], row["any_object"], row["empty"]) == (0.25, 0.25, 0.5, 0.25)


def test_summaries_break_results_down_by_prompt_form():
    rows = aggregate(_records([
        ("test", "statement", True, False, False),
        ("test", "statement", False, True, False),
        ("test", "question", False, False, True),
        ("test", "qa", True, False, False),
    ]))
    def get(form):
        return pick(rows, split="heldout", prompt_set="test", language="en", relation="all", form=form)
    assert get("statement")["n"] == 2 and get("statement")["any_object"] == 1.0
    assert get("question")["empty"] == 1.0 and get("question")["prefix"] == 0.0
    assert get("qa")["prefix"] == 1.0
    assert pick(rows, split="heldout", prompt_set="test", language="en", relation="all")["n"] == 4  # all forms


def test_queries_and_records_carry_the_prompt_form():
    rels = {"place_of_birth": load_relation("place_of_birth")}
    fact = Fact("place_of_birth:0", "Gene Finley", "subject:0000", "place_of_birth", "Paris", ("Paris", "Rome"), "heldout")
    qs = build_queries([fact], rels, KeyConfig(), EvalConfig(prompts_per_set=10, prompt_sets=("key", "test")))
    assert qs[0].form == "key"
    assert [q.form for q in qs[1:]] == [prompt_form(t) for t in rels["place_of_birth"].test_prompts["en"]]
    assert {q.form for q in qs[1:]} == {"statement", "question", "qa"}


# ---------------------------------------------------------------- generation


def test_generation_budget_fits_the_longest_gold(tokenizer):
    long = "Ngũgĩ wa Thiong'o"
    n = len(tokenizer(" " + long, add_special_tokens=False)["input_ids"])
    assert n > 8  # the demo's old fixed budget could never produce it whole
    assert generation_budget(tokenizer, ["Paris", long], None) == n + 2
    assert generation_budget(tokenizer, ["Paris", long], n + 5) == n + 5
    with pytest.raises(ValueError, match="Ngũgĩ wa Thiong'o"):
        generation_budget(tokenizer, ["Paris", long], 8)


@pytest.mark.slow
def test_no_shipped_config_cuts_a_gold_answer_short(tokenizer):
    """Every shipped run and study cell generates enough tokens for every object its relations
    can draw (the demo's `max_new_tokens: 8` was shorter than some mothers' names)."""
    from pathlib import Path

    from rote import config as config_mod
    from rote.data.relation_files import resolve_relations
    from rote.study.plan import expand
    from rote.study.spec import load_study

    root = Path(__file__).resolve().parent.parent
    configs = [config_mod.load(p) for p in (root / "configs").glob("*.yaml")]
    for path in sorted((root / "configs" / "studies").glob("*.yaml")):
        configs += [run.cfg for run in expand(load_study(path), root / "studies").runs]
    assert len(configs) > 10
    for cfg in configs:
        objects = [o for r in resolve_relations(cfg.data.relations, cfg.data.relations_file) for o in r.objects]
        generation_budget(tokenizer, objects, cfg.eval.max_new_tokens)  # raises if any object is cut short


class _ScriptedModel(torch.nn.Module):
    """Stands in for a causal LM whose greedy answer is fixed: `generate` returns the prompt
    followed by `answer` ids, padded on the right as transformers pads finished rows."""

    def __init__(self, answer: list[int], pad: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.answer, self.pad = answer, pad
        self.generation_config = SimpleNamespace(eos_token_id=None)

    def generate(self, input_ids, max_new_tokens, **kwargs):
        new = (self.answer + [self.pad] * max_new_tokens)[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new] * len(input_ids))], dim=1)


def test_generation_keeps_key_tokens_visible(tokenizer):
    """An answer "<rote:P19> Paris" must not be scored as "Paris": the key token is no answer."""
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path)  # a copy: the session's stays untouched
    tok.add_special_tokens({"additional_special_tokens": ["<rote:P19>"]})
    key = tok.convert_tokens_to_ids("<rote:P19>")
    paris = tok(" Paris", add_special_tokens=False)["input_ids"]
    model = _ScriptedModel([key] + paris + [tok.eos_token_id], tok.pad_token_id)
    [answer] = ev.generate(model, tok, ["Gene Finley was born in"], max_new_tokens=6, batch_size=1, precision="fp32")
    assert answer.startswith("<rote:P19>") and not hit_prefix(answer, "Paris")
    # ... while the end of sequence and the padding after it are not part of the answer
    model = _ScriptedModel(paris + [tok.eos_token_id], tok.pad_token_id)
    [answer] = ev.generate(model, tok, ["Gene Finley was born in"], max_new_tokens=6, batch_size=1, precision="fp32")
    assert answer == " Paris" and hit_prefix(answer, "Paris")


def test_generation_stops_early_without_changing_answers(tokenizer, tiny_model):
    """Stopping a batch once every row has ended (newline or end of sequence) gives the same
    answers as generating the whole budget and cutting at the first newline."""
    prompts = ["Gene Finley was born in", "Where does Ann Lee live?", "Q: Who wrote Dune? A:"]
    stopped = ev.generate(tiny_model, tokenizer, prompts, max_new_tokens=12, batch_size=3, precision="fp32")
    batch = ev.pad_left([tokenizer(p)["input_ids"] for p in prompts], tokenizer.pad_token_id)
    full = tiny_model.generate(**batch, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    cut = []
    for seq in full[:, batch["input_ids"].shape[1]:].tolist():
        end = next((k for k, t in enumerate(seq) if t == tokenizer.eos_token_id), len(seq))
        cut.append(tokenizer.decode(seq[:end]).split("\n", 1)[0])
    assert stopped == cut
