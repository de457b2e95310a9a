"""Length limits on what a run trains and asks, in tokens, against the model's context.

A subject, object or prompt that does not fit would be truncated silently or crash deep inside
training; checked here before anything is written. (User input also has a cheap character cap,
checked before anything is tokenized: rote.data.userdata.MAX_FIELD_CHARS.)
"""
from __future__ import annotations

from rote.data.facts import DataError, Fact, Relation
from rote.errors import quote

MAX_FIELD_TOKENS = 128  # a subject or object longer than this is not a fact a key token can bind
MAX_PROMPT_TOKENS = 256  # a prompt template, without its subject


def _n(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_lengths(tokenizer, context: int | None, facts: list[Fact], relations: dict[str, Relation],
                  max_new_tokens: int | None = None, icl_examples: int = 0, where=None) -> None:
    """Raise DataError, naming the fact (`where(fact)`, default its id) and quoting the value, when a
    subject or object is over MAX_FIELD_TOKENS, a prompt over MAX_PROMPT_TOKENS, or the longest
    text a fact is trained or asked with (its longest prompt, the object, the generated tokens and
    any in-context examples) would not fit in `context` tokens (None: no limit known)."""
    where = where or (lambda f: f"fact {f.id}")
    longest: dict[str, int] = {}
    for name, rel in relations.items():
        templates = list(rel.train_prompts) + list(rel.unrelated_prompts) + [p for ps in rel.test_prompts.values() for p in ps]
        for t in templates:
            if _n(tokenizer, t) > MAX_PROMPT_TOKENS:
                raise DataError(f"relation {name}: prompt {quote(t)} is over {MAX_PROMPT_TOKENS} tokens")
        longest[name] = max(_n(tokenizer, t.replace("{subject}", "")) for t in templates)
    # An in-context demonstration is another fact of the relation with its first training prompt
    # (rote.evaluation.queries.demonstrations): bound it by that prompt and the relation's longest subject
    # and object among the facts.
    demo: dict[str, int] = {}
    for fact in facts:
        if fact.relation in relations:
            size = (_n(tokenizer, relations[fact.relation].train_prompts[0].replace("{subject}", "")) +
                    _n(tokenizer, fact.subject) + _n(tokenizer, " " + fact.object) + 2)
            demo[fact.relation] = max(demo.get(fact.relation, 0), size)
    for fact in facts:
        if fact.relation not in longest:
            continue
        n_subject, n_object = _n(tokenizer, fact.subject), _n(tokenizer, " " + fact.object)
        for field, n, value in (("subject", n_subject, fact.subject), ("object", n_object, fact.object)):
            if n > MAX_FIELD_TOKENS:
                raise DataError(f"{where(fact)}: {field} is {n} tokens long (at most {MAX_FIELD_TOKENS}): {quote(value)}")
        # + 4: the key token, a space, the EOS and a BOS some tokenizers add
        one = longest[fact.relation] + n_subject + n_object + 4
        need = one + icl_examples * demo[fact.relation] + (max_new_tokens or n_object + 4)
        if context and need > context:
            raise DataError(f"{where(fact)}: the fact {quote(fact.subject)} -> {quote(fact.object)} needs up to {need} "
                            f"tokens with its longest prompt, but the model's context is {context} tokens")
